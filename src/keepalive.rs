//! THREAD `keepalive`: renews the user-data listen key.
//!
//! Binance drops a key 60 minutes after its last renewal; we renew every `SYNCD_KEEPALIVE_S`
//! (default 30 minutes), so one failed attempt leaves time for another. The PUT carries the
//! API-key header only: a timestamp or signature gets `-1101`. A `-1125` (key unknown) means the
//! key is gone: the stream thread is told to get a new key and reconnect. Any other failure is
//! retried after a shorter pause.

use crate::rest::{RestClient, LISTEN_KEY_KEEPALIVE};
use crate::stream::{KeyCell, StreamCtl};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use std::io;
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

pub struct Keepalive {
    pub rest: Arc<RestClient>,
    pub key: KeyCell,
    pub every: Duration,
    /// Pause before retrying a PUT that failed for a reason other than `-1125`.
    pub retry: Duration,
    pub ctl: Sender<StreamCtl>,
    pub stop: Receiver<()>,
}

impl Keepalive {
    pub fn spawn(self) -> io::Result<JoinHandle<()>> {
        thread::Builder::new().name("keepalive".into()).spawn(move || self.run())
    }

    fn run(self) {
        let mut wait = self.every;
        loop {
            match self.stop.recv_timeout(wait) {
                Err(RecvTimeoutError::Timeout) => {}
                _ => return,
            }
            wait = self.every;
            let Some(key) = self.key.get() else { continue };
            match self.rest.call(&LISTEN_KEY_KEEPALIVE, &[("listenKey", key.expose())]) {
                Ok(_) => log::debug!("keepalive: renewed key {}", key.fingerprint()),
                Err(e) if e.api_code() == Some(-1125) => {
                    // The stream may have moved to a new key meanwhile; only a key still in use
                    // is cleared, and the stream ends a connection only if its key is gone.
                    if self.key.get().as_ref() == Some(&key) {
                        log::warn!("keepalive: listen key {} is gone; asking for a new one", key.fingerprint());
                        self.key.set(None);
                        let _ = self.ctl.try_send(StreamCtl::RenewKey);
                    }
                }
                Err(crate::Error::Stopped) => return,
                Err(e) => {
                    wait = self.retry.min(self.every);
                    log::warn!("keepalive: renewal failed ({e}); retrying in {wait:?}");
                }
            }
        }
    }
}
