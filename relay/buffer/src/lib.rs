//! Lock-free, SCN-indexed circular event buffer (one writer, many readers).
