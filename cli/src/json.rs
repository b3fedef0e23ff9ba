//! Hand-written JSON output of the tools (`--json`): objects built field by field, strings
//! escaped by the engine's `json_literal`. Every document is one line.

use std::fmt::Display;

use flowstate::codec::dynamic::json_literal;

/// A JSON object being written.
#[derive(Debug, Default)]
pub struct Obj {
    fields: Vec<String>,
}

impl Obj {
    /// An empty object.
    pub fn new() -> Self {
        Obj::default()
    }

    /// Adds field `key` with `value` already written as JSON (a number, `true`, an array...).
    pub fn raw(mut self, key: &str, value: impl Display) -> Self {
        self.fields.push(format!("{}:{value}", json_literal(key)));
        self
    }

    /// Adds field `key` with the string `value`.
    pub fn str(self, key: &str, value: &str) -> Self {
        let value = json_literal(value);
        self.raw(key, value)
    }

    /// Adds field `key` with `value` as a string, or `null`.
    pub fn opt_str(self, key: &str, value: Option<&str>) -> Self {
        let value = value.map_or_else(|| "null".to_owned(), json_literal);
        self.raw(key, value)
    }

    /// The object's text.
    pub fn end(self) -> String {
        format!("{{{}}}", self.fields.join(","))
    }
}

/// A JSON array of values already written as JSON.
pub fn array(items: impl IntoIterator<Item = String>) -> String {
    let items: Vec<String> = items.into_iter().collect();
    format!("[{}]", items.join(","))
}
