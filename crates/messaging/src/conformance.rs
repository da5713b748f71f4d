//! The conformance suite: the same test functions, run against every backend that can
//! run here (see each backend's `tests/`). Being written with the embedded backend.
