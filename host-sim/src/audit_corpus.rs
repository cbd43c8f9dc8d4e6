//! The audit corpus (being written).
