//! Errors across the crate: every module has its own `thiserror` enum whose variants keep their
//! cause as a `#[source]` (the pipeline's error wraps the pretrain, sink, source and runtime
//! errors, and so on up to `main`, which prints the whole chain). This module only writes such a
//! chain as one line, for the places that must turn an error into a message — a configuration
//! problem reported at its `file:line: field`.

/// `error: cause: cause of the cause`, as `main` prints a failed run.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_chain_is_written_outermost_first() {
        let io = std::io::Error::other("disk full");
        let write = crate::atomic::WriteError::new(std::path::Path::new("/out/x"), io);
        assert_eq!(super::chain(&write), "cannot write /out/x: disk full");
    }
}
