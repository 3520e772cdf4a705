//! Which API an account sends through.

use serde::{Deserialize, Serialize};

/// The provider of an account: the Gmail API or Microsoft Graph.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    #[default]
    Gmail,
    Graph,
}

impl Provider {
    /// `gmail` or `graph`.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Gmail => "gmail",
            Provider::Graph => "graph",
        }
    }
}
