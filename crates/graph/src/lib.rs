//! apimail-graph (in progress)
