//! Harness for the cross-component tests.
pub mod helm;
pub mod tools;
