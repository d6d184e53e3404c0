//! Discrete-event simulation (placeholder).
