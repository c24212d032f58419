//! Status codes and error kinds: one table, read both ways.
//!
//! A plugin turns the [`ErrorKind`] of a failure into its status code and
//! error object; a host turns a status code back into the kind. A status
//! code appended to the ABI is one more row here.

use bext_locking::ErrorKind;

use crate::abi::*;

/// Every error status of ABI v1 (revision 1.1) and the kind it stands for.
const ERRORS: [(i32, ErrorKind); 4] = [
    (BEXT_LOCKING_ERR_BACKEND, ErrorKind::Backend),
    (BEXT_LOCKING_ERR_INVALID, ErrorKind::InvalidArgument),
    (BEXT_LOCKING_ERR_PANIC, ErrorKind::Panic),
    (BEXT_LOCKING_ERR_UNSUPPORTED, ErrorKind::Unsupported),
];

/// The status code a plugin returns for a failure of `kind`. A kind no
/// plugin may send ([`ErrorKind::Protocol`]) is reported as a backend error.
pub fn status_of(kind: ErrorKind) -> i32 {
    ERRORS.iter().find(|(_, k)| *k == kind).map_or(BEXT_LOCKING_ERR_BACKEND, |(s, _)| *s)
}

/// The kind of an error status, or `None` for a status this ABI version
/// does not define (a host reports that as [`ErrorKind::Protocol`]).
pub fn kind_of(status: i32) -> Option<ErrorKind> {
    ERRORS.iter().find(|(s, _)| *s == status).map(|(_, k)| *k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_reads_both_ways() {
        for (status, kind) in ERRORS {
            assert_eq!(status_of(kind), status);
            assert_eq!(kind_of(status), Some(kind));
        }
        assert_eq!(kind_of(-4), Some(ErrorKind::Unsupported));
        assert_eq!(kind_of(-5), None);
        assert_eq!(kind_of(BEXT_LOCKING_OK), None);
        assert_eq!(status_of(ErrorKind::Protocol), BEXT_LOCKING_ERR_BACKEND);
    }
}
