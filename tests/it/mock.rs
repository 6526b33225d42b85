//! A scripted HTTP/1.1 server on a loopback port the OS picks: each test decides every
//! answer and sees every request exactly as it arrived. For client tests that need precise
//! control (a -1021 on the first try only, a 503 on an order); the paper exchange covers the
//! rest.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;

#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// Parameter names in the order they were sent (query, then body).
    pub fn param_names(&self) -> Vec<String> {
        [self.query.as_str(), self.body.as_str()]
            .iter()
            .flat_map(|part| part.split('&'))
            .filter(|kv| !kv.is_empty())
            .map(|kv| kv.split('=').next().unwrap_or("").to_string())
            .collect()
    }

    pub fn param(&self, name: &str) -> Option<String> {
        [self.query.as_str(), self.body.as_str()]
            .iter()
            .flat_map(|part| part.split('&'))
            .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(String::from))
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Reply {
    pub fn json(status: u16, body: &str) -> Reply {
        Reply { status, headers: vec![], body: body.to_string() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

type Script = dyn Fn(&Request, usize) -> Reply + Send + Sync;

pub struct Mock {
    pub url: String,
    pub log: Arc<Mutex<Vec<Request>>>,
}

impl Mock {
    /// `script(request, index)` answers the `index`-th request (0-based, over all paths).
    pub fn start(script: impl Fn(&Request, usize) -> Reply + Send + Sync + 'static) -> Mock {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let log = Arc::new(Mutex::new(Vec::new()));
        let script: Arc<Script> = Arc::new(script);
        let log2 = log.clone();
        // The thread ends with the test process; tests never wait for it.
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let (log, script) = (log2.clone(), script.clone());
                thread::spawn(move || serve(stream, log, script));
            }
        });
        Mock { url, log }
    }

    pub fn requests(&self) -> Vec<Request> {
        self.log.lock().unwrap().clone()
    }
}

fn serve(stream: TcpStream, log: Arc<Mutex<Vec<Request>>>, script: Arc<Script>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let method = parts.next().unwrap_or("").to_string();
        let target = parts.next().unwrap_or("").to_string();
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p.to_string(), q.to_string()),
            None => (target.clone(), String::new()),
        };
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.push((k.trim().to_string(), v.trim().to_string()));
            }
        }
        let len: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let req = Request { method, path, query, headers, body: String::from_utf8_lossy(&body).into_owned() };
        let index = {
            let mut log = log.lock().unwrap();
            log.push(req.clone());
            log.len() - 1
        };
        let reply = script(&req, index);
        let mut out = format!(
            "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            reply.status,
            reply.body.len()
        );
        for (k, v) in &reply.headers {
            out.push_str(&format!("{k}: {v}\r\n"));
        }
        out.push_str("\r\n");
        out.push_str(&reply.body);
        if writer.write_all(out.as_bytes()).is_err() {
            return;
        }
    }
}
