//! Static file pod source (to be written).
