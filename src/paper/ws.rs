//! STUB until the real WebSocket server lands.
use super::hub::StreamHub;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;
pub struct WsSettings {
    pub ping_interval: Duration,
    pub pong_timeout: Duration,
    pub max_connection_life: Duration,
    pub incoming_per_second: u32,
    pub max_frame: usize,
}
pub trait KeyCheck: Send + Sync + 'static {
    fn live_key(&self, key: &str) -> Option<String>;
    fn now_ms(&self) -> i64;
}
pub struct WsServer {
    addr: SocketAddr,
    _l: TcpListener,
}
impl WsServer {
    pub fn start(addr: SocketAddr, _s: WsSettings, _h: StreamHub, _k: Arc<dyn KeyCheck>) -> std::io::Result<WsServer> {
        let l = TcpListener::bind(addr)?;
        Ok(WsServer { addr: l.local_addr()?, _l: l })
    }
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }
    pub fn refuse_for(&self, _p: Duration) {}
}
