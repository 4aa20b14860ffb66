//! Static checks of template.yaml against the code: see the `template` test (template.rs). This
//! crate links the pure core only, so `make test` runs them without the AWS SDKs or a local AWS.
