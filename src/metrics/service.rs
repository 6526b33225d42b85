//! The metrics server and the alerter as one unit that can outlive a daemon's start-up: `run`
//! starts it before its first attempt, so `/healthz` answers (503 past the deadline) and the
//! stream-down alert goes while the exchange cannot be reached; the daemon attaches its
//! executor, plugins and fill tap once it runs.

use super::{Shared, Sources};
use crate::config::Config;
use crate::error::Error;
use crate::lock::RwLockAnyway;
use crate::rest::RestClient;
use crossbeam_channel::Sender;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::thread::JoinHandle;

pub struct Service {
    shared: Shared,
    stop: Option<Sender<()>>,
    threads: Vec<(&'static str, JoinHandle<()>)>,
    addr: Option<SocketAddr>,
}

impl Service {
    /// Binds `SYNCD_METRICS_ADDR` (an address in use is a configuration problem) and starts
    /// what the configuration asks for; with neither a listener nor a webhook, no thread.
    pub fn start(config: &Config, rest: &RestClient) -> Result<Service, Error> {
        let metrics = rest.metrics().clone();
        metrics.configure(config.stream_deadline, &config.symbols);
        let shared: Shared = Arc::new(RwLock::new(Sources {
            metrics,
            gate: rest.gate().clone(),
            clock: rest.clock().clone(),
            executor: None,
            plugins: None,
            tap: None,
            market: None,
        }));
        let (stop_tx, stop_rx) = crossbeam_channel::bounded::<()>(0);
        let spawn_err = |e: std::io::Error| Error::Internal(format!("cannot start a thread: {e}"));
        let mut service = Service { shared: shared.clone(), stop: Some(stop_tx), threads: Vec::new(), addr: None };
        if let Some(addr) = config.metrics_addr {
            let listener = std::net::TcpListener::bind(addr)
                .map_err(|e| Error::Config(format!("SYNCD_METRICS_ADDR: cannot listen on {addr}: {}", e.kind())))?;
            service.addr = listener.local_addr().ok();
            let server = super::server::spawn(listener, shared.clone(), stop_rx.clone()).map_err(spawn_err)?;
            service.threads.push(("metrics", server));
            log::info!("metrics: on http://{}/metrics", service.addr.map_or("?".into(), |a| a.to_string()));
        }
        if let Some(webhook) = &config.alert_webhook {
            let settings = super::alerts::AlertSettings::new(webhook.clone(), config.alert_repeat, config.alert_quiet);
            let sources = shared.read_anyway().clone();
            let alerter = super::alerts::Alerter::new(settings, sources).following(shared);
            service.threads.push(("alerts", alerter.spawn(stop_rx).map_err(spawn_err)?));
        }
        Ok(service)
    }

    /// Where `/metrics` and `/healthz` are served (the bound port when asked for port 0).
    pub fn addr(&self) -> Option<SocketAddr> {
        self.addr
    }

    /// What the running daemon adds: its executor, plugins and fill tap.
    pub fn attach(&self, sources: Sources) {
        *self.shared.write_anyway() = sources;
    }

    /// Stops both threads, waiting for them until `by` (a webhook POST in flight may take
    /// its 5 s timeout: the process is exiting, it is left behind).
    pub fn stop(mut self, by: std::time::Instant) {
        drop(self.stop.take());
        for (name, t) in self.threads.drain(..) {
            while !t.is_finished() && std::time::Instant::now() < by {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            if t.is_finished() && t.join().is_err() {
                log::error!("metrics: thread {name} panicked");
            }
        }
    }
}
