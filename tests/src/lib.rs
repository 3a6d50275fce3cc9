//! Harness for the cross-component tests.

pub mod apiserver;
pub mod bins;
pub mod e2e_support;
pub mod helm;
pub mod kubelet;
pub mod registry;
pub mod tools;
