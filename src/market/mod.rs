//! Market data (issue 22). So far the pure local order book ([`book`]); the market-stream
//! thread that feeds it comes with the rest of the issue.

pub mod book;
