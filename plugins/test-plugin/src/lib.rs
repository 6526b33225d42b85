//! The integration tests' plugin. Settings (`NAME.conf`):
//! - `record = PATH`: append `start V`, `fill V SEQ REPLAYED`, `stop V` lines to PATH (V is the
//!   version this build was made with: `SYNCD_TEST_PLUGIN_VERSION` at build time, else `1`);
//! - `mode = normal | panic | sleep | fail`: what `on_fill` does besides recording;
//! - `sleep_ms = N`: how long `sleep` sleeps.

use binance_syncd_plugin::{export_strategy, Fill, Host, StartInfo, Strategy};
use std::io::Write;

const VERSION: &str = match option_env!("SYNCD_TEST_PLUGIN_VERSION") {
    Some(v) => v,
    None => "1",
};

struct Recorder {
    host: Host,
    record: Option<std::fs::File>,
    mode: String,
    sleep_ms: u64,
}

impl Recorder {
    fn line(&mut self, text: &str) {
        if let Some(f) = self.record.as_mut() {
            let _ = writeln!(f, "{text}");
            let _ = f.flush();
        }
    }
}

impl Strategy for Recorder {
    fn start(host: Host, start: &StartInfo<'_>) -> Result<Self, String> {
        let record = match start.setting("record") {
            Some(path) => Some(
                std::fs::OpenOptions::new().create(true).append(true).open(path).map_err(|e| format!("{path}: {e}"))?,
            ),
            None => None,
        };
        let mode = start.setting("mode").unwrap_or("normal").to_string();
        let sleep_ms = start.setting("sleep_ms").and_then(|v| v.parse().ok()).unwrap_or(1000);
        let mut r = Recorder { host, record, mode, sleep_ms };
        r.line(&format!("start {VERSION}"));
        r.host.info(&format!("test plugin {VERSION} started in mode {}", r.mode));
        Ok(r)
    }

    fn on_fill(&mut self, fill: &Fill<'_>) -> Result<(), String> {
        self.line(&format!("fill {VERSION} {} {}", fill.seq, u8::from(fill.replayed)));
        match self.mode.as_str() {
            "panic" => panic!("test plugin panics on fill {}", fill.seq),
            "fail" => Err(format!("test plugin fails on fill {}", fill.seq)),
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_millis(self.sleep_ms));
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn stop(&mut self) {
        self.line(&format!("stop {VERSION}"));
    }
}

export_strategy!(Recorder, VERSION);
