//! Plain-text descriptions shared by the CLI and the console.
