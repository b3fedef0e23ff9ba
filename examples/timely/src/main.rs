fn main() {
    timely::execute_from_args(std::env::args(), |w| {
        let _ = w.index();
    })
    .map(|_| ())
    .unwrap_or(());
}
