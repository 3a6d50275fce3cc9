//! Harness for the cross-component tests.
