//! Black-box tests of the chat server: the harness.
//!
//! A test starts a real frontend binary ([`Server`]) on a free loopback port,
//! connects [`Client`]s to it over TCP, and checks what they receive against
//! `PROTOCOL.md`. The binaries are built once per test process from the
//! workspace ([`binaries`]), never taken from a stale `target/`. Every process
//! a test starts is stopped by pid when its [`Server`] drops.
//!
//! Each protocol case is a function of a [`Frontend`]; [`frontend_tests!`]
//! turns a list of cases into one `#[test]` per case and frontend variant, so
//! a failure names both, e.g. `mio_4::nick_is_server_wide`.

pub mod binaries;
pub mod client;
pub mod mio;
pub mod process;
pub mod server;
pub mod time;

pub use client::{marker, Client, LONG_WAIT, WAIT};
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
