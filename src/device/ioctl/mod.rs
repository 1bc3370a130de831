//! The IOCTL handlers, one file per IOCTL or family, each a method of the
//! device's shared state that [`Device::ioctl`](super::Device::ioctl)'s
//! table dispatches to: [`info`] (GET_INFO), [`open`] (OPEN, and the
//! credentials' arrival), [`step`] (STEP), [`close`] (CLOSE), [`selftest`]
//! (SELFTEST, which starts a run of `crate::selftest`), [`records`]
//! (ENCRYPT, DECRYPT, SHUTDOWN) and [`query`] (QUERY). Each validates its
//! input and output buffer first and completes a bad request at once.

pub(super) mod close;
pub(super) mod info;
pub(super) mod open;
pub(super) mod query;
pub(super) mod records;
pub(super) mod selftest;
pub(super) mod step;
