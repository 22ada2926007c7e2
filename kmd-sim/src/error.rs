//! The errno set of the real driver, with a message saying what was wrong.

use aicsim_abi::dbc::CompletionCode;

/// Errno values the uAPI returns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Errno {
    EINVAL,
    ENOENT,
    EAGAIN,
    ETIMEDOUT,
    ENODEV,
    EBUSY,
    EPERM,
    ENOSPC,
    EPIPE,
    ENOMEM,
    /// The device completed a transfer with an error completion code.
    EIO,
}

impl Errno {
    /// The Linux errno number.
    pub fn code(self) -> i32 {
        match self {
            Errno::EINVAL => libc::EINVAL,
            Errno::ENOENT => libc::ENOENT,
            Errno::EAGAIN => libc::EAGAIN,
            Errno::ETIMEDOUT => libc::ETIMEDOUT,
            Errno::ENODEV => libc::ENODEV,
            Errno::EBUSY => libc::EBUSY,
            Errno::EPERM => libc::EPERM,
            Errno::ENOSPC => libc::ENOSPC,
            Errno::EPIPE => libc::EPIPE,
            Errno::ENOMEM => libc::ENOMEM,
            Errno::EIO => libc::EIO,
        }
    }
}

/// A failed uAPI call: the errno and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{errno:?}: {detail}")]
pub struct KmdError {
    pub errno: Errno,
    pub detail: String,
    /// The device's completion code, for [`Errno::EIO`].
    pub device_code: Option<CompletionCode>,
    /// EBUSY because the device already holds an activation on the channel named.
    pub channel_in_use: bool,
}

impl KmdError {
    pub fn new(errno: Errno, detail: impl Into<String>) -> KmdError {
        KmdError { errno, detail: detail.into(), device_code: None, channel_in_use: false }
    }

    pub fn device(code: CompletionCode, what: impl std::fmt::Display) -> KmdError {
        KmdError {
            errno: Errno::EIO,
            detail: format!("{what}: {code}"),
            device_code: Some(code),
            channel_in_use: false,
        }
    }
}

/// Shorthand for building an error result.
pub(crate) fn fail<T>(errno: Errno, detail: impl Into<String>) -> Result<T, KmdError> {
    Err(KmdError::new(errno, detail))
}

pub type Result<T, E = KmdError> = std::result::Result<T, E>;
