//! Black-box tests of the chat server: the harness.
//!
//! A test starts a real frontend binary ([`Server`]) on `127.0.0.1:0`, reads
//! the real port from what it prints, connects [`Client`]s to it over TCP, and
//! checks what they receive against `PROTOCOL.md`, byte for byte where the
//! protocol fixes the text.
//!
//! - [`binaries`]: each frontend is built once per test process, by `cargo
//!   build` into the target directory and profile of the running test, never
//!   taken from a stale `target/` (or taken from `CHAT_TESTS_MIO_BIN` /
//!   `CHAT_TESTS_SMOL_BIN` to test a prebuilt binary).
//! - [`server`]: a [`Server`] owns a private directory (pid, log and socket
//!   files) and every process it started; dropping it stops them by pid,
//!   SIGTERM then SIGKILL, the chat-mio master first and then any worker that
//!   outlived it. [`mio`] reads chat-mio's `status` and `connections`.
//! - [`client`]: every wait is bounded ([`WAIT`] per line). An absence is never
//!   proved by sleeping: a client synchronises on a later reply of the server
//!   ([`Client::sync`], [`Client::quiet_sync`]), which comes after everything
//!   that took effect before it.
//! - [`process`]: pids, children, `ps`, signals and bounded waits.
//!
//! Each protocol case is a function of a [`Frontend`]; [`frontend_tests!`]
//! turns a list of cases into one `#[test]` per case and frontend variant, so
//! a failure names both, e.g. `mio_4::contested_nick_is_won_once`.

pub mod binaries;
pub mod client;
pub mod mio;
pub mod process;
pub mod server;
pub mod time;

pub use client::{marker, Client, Next, LONG_WAIT, WAIT};
pub use process::Pid;
pub use server::{CtlOutput, Frontend, Launch, Server, TempDir};

/// Declares one `#[test]` per case and frontend variant: modules `mio_1`,
/// `mio_4`, `smol_1` and `smol_4`, each calling `case(Frontend::…)`.
///
/// Each case is a `fn(Frontend)` in the module that invokes the macro.
#[macro_export]
macro_rules! frontend_tests {
    ($($case:ident),* $(,)?) => {
        $crate::frontend_tests!(@variant mio_1, $crate::Frontend::Mio { workers: 1 }, $($case),*);
        $crate::frontend_tests!(@variant mio_4, $crate::Frontend::Mio { workers: 4 }, $($case),*);
        $crate::frontend_tests!(@variant smol_1, $crate::Frontend::Smol { shards: 1 }, $($case),*);
        $crate::frontend_tests!(@variant smol_4, $crate::Frontend::Smol { shards: 4 }, $($case),*);
    };
    (@variant $module:ident, $frontend:expr, $($case:ident),*) => {
        mod $module {
            $(
                #[test]
                fn $case() {
                    super::$case($frontend)
                }
            )*
        }
    };
}
