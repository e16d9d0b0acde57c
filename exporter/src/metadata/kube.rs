//! Kubernetes API pod source (to be written).
