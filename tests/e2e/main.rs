//! The end-to-end suite on the local stack (the local AWS that `scripts/with-stack.sh` starts, and
//! the mock API): one test binary, one module per concern, so the AWS SDKs are linked once.
//!
//! `make test` runs it in four processes of this one binary (see the Makefile):
//! * everything but the three below;
//! * `secrets::` alone: it installs the process-wide log subscriber and reads every line logged;
//! * `resilience::` alone: load tests whose rate bounds assume no other job shares the local AWS;
//! * `limit::` alone, on a local AWS of its own (docs/rate-limit.md says why).

mod auth;
mod bad_input;
mod claims;
mod csv_multiline;
mod faults;
mod limit;
mod multipart;
mod oauth;
mod observe;
mod pipeline;
mod replay;
mod resilience;
mod secret_source;
mod secrets;
mod shaping;
mod token_store;
