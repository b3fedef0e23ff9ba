//! Progress bars of the long-running tools (verify, convert): on standard error, and only when
//! it is a terminal, so that scripts and tests see clean output.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A bar of `len` steps counting `unit`, drawn on standard error; hidden when standard error
/// is not a terminal (`ProgressDrawTarget::stderr` draws nothing then).
pub fn bar(len: u64, message: &str, unit: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    let template = format!("{{msg}} [{{wide_bar}}] {{pos}}/{{len}} {unit} ({{eta}})");
    if let Ok(style) = ProgressStyle::with_template(&template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(message.to_owned());
    bar
}
