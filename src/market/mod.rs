//! Market data (issue 22): the `market` thread ([`stream`]) keeping a local order book per
//! symbol ([`book`]) from the public market stream, and the [`MarketView`] it shares with the
//! executor and `/metrics`.

pub mod book;
pub mod feed;
pub mod stream;
pub mod view;

pub use feed::{BookUpdate, Feed, MarketItem, Subscription, TradeUpdate};
pub use stream::{DepthSource, MarketSettings, MarketStream, SnapshotPace};
pub use view::{MarketState, MarketView, SymbolMarket, Top};
