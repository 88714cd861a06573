//! Logs to stderr through `log` and `env_logger`, as chat-mio does.

use std::io::Write;

/// Starts the logger: `info` and up unless `RUST_LOG` says otherwise; each
/// line carries the time, the pid and the level.
pub fn init() {
    let pid = std::process::id();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info"))
        .format(move |buf, record| {
            writeln!(
                buf,
                "{} chat-smol[{pid}] {:<5} {}",
                buf.timestamp_millis(),
                record.level(),
                record.args()
            )
        })
        .init();
}
