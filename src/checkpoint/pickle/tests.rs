//! Tests on hand-assembled pickles.
