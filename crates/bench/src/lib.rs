//! `triage bench-overhead`: the latency the router adds over calling the mock upstream directly,
//! at fixed request rates.
//!
//! It starts two children of this very binary (`mock-upstream` and `serve` pointed at it), drives
//! both with the same open-loop load, and prints p50/p99 of each path and their difference. It is
//! a benchmark that prints figures, never a pass/fail test, and it measures the router's own cost
//! only: the mock answers at once, so no provider latency hides the overhead.
//!
//! Open loop: request `i` is due at `t0 + i/rate` whatever happened before, and its latency counts
//! from that due time, so a stall in the system under test shows up in the figures instead of
//! silently slowing the load down (no coordinated omission).

use std::fs::File;
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use hdrhistogram::Histogram;
use reqwest::header::CONTENT_TYPE;
use serde::Serialize;
use serde_json::json;
use tokio::sync::mpsc;

/// The log level given to both children: the router logs a line per request at `info`, which
/// would measure the terminal rather than the router.
const CHILD_LOG: &str = "warn";
/// Longest a child may take to answer its readiness probe (the router may load a classifier).
const READY_TIMEOUT: Duration = Duration::from_secs(60);
/// Length of one measured slice; each path gets `--duration-secs` of them.
const SLICE: Duration = Duration::from_secs(1);
/// A request slower than this counts as an error rather than a latency.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Highest latency the histograms hold, in µs.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Options of `triage bench-overhead`.
#[derive(Debug, Clone, clap::Args)]
pub struct Options {
    /// Request rates to measure, in requests per second.
    #[arg(long, value_delimiter = ',', default_values_t = [500, 1000, 2000])]
    pub rates: Vec<u32>,
    /// Measured seconds per path and rate, in one-second slices alternating between the paths.
    #[arg(long, default_value_t = 10)]
    pub duration_secs: u64,
    /// Seconds of discarded load per path before each rate's measurement.
    #[arg(long, default_value_t = 2)]
    pub warmup_secs: u64,
    /// Ask for streamed (SSE) answers and read each whole stream.
    #[arg(long)]
    pub stream: bool,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The router's `[limits] max_concurrent_requests` (default: the config default), to
    /// see how it sheds past saturation.
    #[arg(long)]
    pub max_concurrent: Option<usize>,
    /// Send the router's requests with a virtual key (budget and rpm set high enough never to
    /// refuse), to measure what checking and charging a key costs.
    #[arg(long)]
    pub virtual_key: bool,
    /// Trace every request (`[telemetry] otlp_endpoint`), exporting to the mock's OTLP sink,
    /// to measure what tracing costs.
    #[arg(long)]
    pub trace: bool,
}

/// Runs the benchmark and prints its report on stdout (progress goes to stderr).
pub fn run(options: Options) -> anyhow::Result<()> {
    if options.rates.is_empty() || options.rates.contains(&0) {
        bail!("--rates needs one or more rates above 0");
    }
    if options.duration_secs == 0 {
        bail!("--duration-secs must be above 0");
    }
    // One thread for the load generator: the mock and the router need the other cores, and a
    // single-threaded client has no cross-thread wake-ups of its own to add to the latency.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let report = runtime.block_on(bench(&options))?;
    if options.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_table(&report);
    }
    Ok(())
}

/// Everything `--json` prints.
#[derive(Debug, Serialize)]
struct Report {
    cores: usize,
    /// The 1-minute load average before the run (Linux only): other work skews the figures.
    load_average: Option<f64>,
    stream: bool,
    duration_secs: u64,
    warmup_secs: u64,
    child_log_level: &'static str,
    footprint: Footprint,
    rates: Vec<RateResult>,
}

/// The router process's size and start-up: what a deployment has to provision.
#[derive(Debug, Serialize)]
struct Footprint {
    /// Size of the binary that ran (debug builds are several times larger than release).
    binary_bytes: u64,
    /// From spawning `triage serve` to the first 200 answer to a chat request through it: process
    /// start, config, catalog, the embedded classifier, the outcome log, the listener.
    start_to_first_answer_ms: f64,
    /// Resident memory once the first request is answered (Linux only).
    rss_idle_kib: Option<u64>,
    /// Resident memory after the last rate's load, and its peak over the whole run.
    rss_after_load_kib: Option<u64>,
    rss_peak_kib: Option<u64>,
}

/// One rate: both paths and the router's added latency.
#[derive(Debug, Serialize)]
struct RateResult {
    rate: u32,
    direct: PathStats,
    router: PathStats,
    added_p50_us: i64,
    added_p99_us: i64,
    /// CPU time (user + system) the router process spent per request it answered, over the
    /// whole rate (warm-up included); Linux only.
    router_cpu_us_per_request: Option<f64>,
    /// The same for the mock upstream, over both paths' requests.
    mock_cpu_us_per_request: Option<f64>,
}

/// One path (direct or via the router) at one rate, over all its measured segments.
#[derive(Debug, Serialize)]
struct PathStats {
    requests: u64,
    /// Transport errors, timeouts, incomplete bodies.
    errors: u64,
    /// Answers with a status other than 200 (past saturation: 503 `overloaded`, shed).
    non_200: u64,
    /// How fast those came back: a shed request should be refused at once, not queued.
    non_200_p50_us: Option<u64>,
    first_error: Option<String>,
    achieved_rps: f64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
    /// How late requests started after their due time: the load generator's own delay, CPU
    /// contention included. It is part of every latency above, on both paths alike.
    start_lag_p50_us: u64,
    start_lag_p99_us: u64,
}

async fn bench(options: &Options) -> anyhow::Result<Report> {
    let load_average = load_average();
    let mut children = Children::start(options.max_concurrent, options.trace)?;
    let key = if options.virtual_key {
        Some(children.create_key()?)
    } else {
        None
    };
    let client = http_client()?;
    children.wait_mock(&client).await?;
    let mut router_target = Target::router(children.router, false)?;
    router_target.key.clone_from(&key);
    let start_to_first_answer = children.start_router(&client, &router_target).await?;
    let rss_idle_kib = children.router_memory("VmRSS");
    let direct = Target::direct(children.mock, options.stream)?;
    let mut router = Target::router(children.router, options.stream)?;
    router.key = key;
    let reset = format!("http://{}/_mock/reset", children.mock);
    let mut rates = Vec::new();
    for &rate in &options.rates {
        eprintln!("bench-overhead: {rate} RPS…");
        let bench = RateBench {
            client: &client,
            reset: &reset,
            rate,
            router_pid: children.pid("router"),
            mock_pid: children.pid("mock"),
        };
        rates.push(bench.measure(&direct, &router, options).await?);
    }
    let footprint = Footprint {
        binary_bytes: std::fs::metadata(std::env::current_exe()?)?.len(),
        start_to_first_answer_ms: start_to_first_answer.as_secs_f64() * 1e3,
        rss_idle_kib,
        rss_after_load_kib: children.router_memory("VmRSS"),
        rss_peak_kib: children.router_memory("VmHWM"),
    };
    drop(children);
    Ok(Report {
        cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average,
        stream: options.stream,
        duration_secs: options.duration_secs,
        warmup_secs: options.warmup_secs,
        child_log_level: CHILD_LOG,
        footprint,
        rates,
    })
}

/// User + system CPU time of a process so far, from `/proc/<pid>/stat` (fields 14 and 15, in
/// the kernel's USER_HZ ticks of 10 ms), where there is one.
fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces; the fields after it follow its `)`.
    let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Duration::from_millis(ticks * 10))
}

/// The 1-minute load average from `/proc/loadavg`, where there is one.
fn load_average() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    text.split_whitespace().next()?.parse().ok()
}

/// A keep-alive HTTP/1.1 pool, like the one the router itself uses towards a provider, so both
/// paths pay for the same kind of connection.
fn http_client() -> reqwest::Result<reqwest::Client> {
    reqwest::Client::builder()
        .http1_only()
        .tcp_nodelay(true)
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(300))
        .build()
}

/// Where requests go and what they carry.
#[derive(Clone)]
struct Target {
    url: reqwest::Url,
    body: Bytes,
    stream: bool,
    /// A bearer key to send.
    key: Option<String>,
}

impl Target {
    /// The mock itself, asked for the upstream model name the router would send it.
    fn direct(mock: SocketAddr, stream: bool) -> anyhow::Result<Target> {
        Target::new(mock, "small", stream)
    }

    fn router(router: SocketAddr, stream: bool) -> anyhow::Result<Target> {
        Target::new(router, "mock/small", stream)
    }

    /// A short chat request, identical on both paths but for the model name, so the mock does
    /// the same work for each.
    fn new(addr: SocketAddr, model: &str, stream: bool) -> anyhow::Result<Target> {
        let body = json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello in five words."}],
            "max_tokens": 16,
            "stream": stream,
        });
        Ok(Target {
            url: format!("http://{addr}/v1/chat/completions").parse()?,
            body: Bytes::from(serde_json::to_vec(&body)?),
            stream,
            key: None,
        })
    }
}

/// One rate's measurement.
struct RateBench<'a> {
    client: &'a reqwest::Client,
    reset: &'a str,
    rate: u32,
    /// Process ids of the router and the mock, for their CPU time.
    router_pid: u32,
    mock_pid: u32,
}

impl RateBench<'_> {
    /// Warm-up on each path (discarded), then one-second slices alternating in the order
    /// direct, router, router, direct, …: bursts of other work on the machine (a compile, a
    /// timer) and slow drift then weigh on both paths alike.
    async fn measure(
        &self,
        direct: &Target,
        router: &Target,
        options: &Options,
    ) -> anyhow::Result<RateResult> {
        let (router_cpu, mock_cpu) = (cpu_time(self.router_pid), cpu_time(self.mock_pid));
        let mut served = (0, 0);
        let warmup = Duration::from_secs(options.warmup_secs);
        if !warmup.is_zero() {
            served.0 += self.segment(direct, warmup).await?.requests;
            served.1 += self.segment(router, warmup).await?.requests;
        }
        let mut direct_total = Segment::new();
        let mut router_total = Segment::new();
        for slice in 0..options.duration_secs {
            let order = if slice % 2 == 0 {
                [(direct, &mut direct_total), (router, &mut router_total)]
            } else {
                [(router, &mut router_total), (direct, &mut direct_total)]
            };
            for (target, total) in order {
                total.add(self.segment(target, SLICE).await?);
            }
        }
        served.0 += direct_total.requests;
        served.1 += router_total.requests;
        let per_request = |before: Option<Duration>, pid: u32, requests: u64| {
            let spent = cpu_time(pid)?.checked_sub(before?)?;
            Some(spent.as_secs_f64() * 1e6 / requests.max(1) as f64)
        };
        let router_cpu_us_per_request = per_request(router_cpu, self.router_pid, served.1);
        let mock_cpu_us_per_request = per_request(mock_cpu, self.mock_pid, served.0 + served.1);
        let (direct, router) = (direct_total.stats(), router_total.stats());
        Ok(RateResult {
            router_cpu_us_per_request,
            mock_cpu_us_per_request,
            rate: self.rate,
            added_p50_us: router.p50_us as i64 - direct.p50_us as i64,
            added_p99_us: router.p99_us as i64 - direct.p99_us as i64,
            direct,
            router,
        })
    }

    /// Runs `rate` requests per second against `target` for `length`.
    async fn segment(&self, target: &Target, length: Duration) -> anyhow::Result<Segment> {
        self.reset_mock().await?;
        let count = (f64::from(self.rate) * length.as_secs_f64()).round() as u64;
        let (due_tx, mut due_rx) = mpsc::unbounded_channel();
        let rate = self.rate;
        let pacer = std::thread::spawn(move || pace(rate, count, &due_tx));
        let started = Instant::now();
        let mut in_flight = Vec::with_capacity(count as usize);
        while let Some(due) = due_rx.recv().await {
            let (client, target) = (self.client.clone(), target.clone());
            in_flight.push(tokio::spawn(one_request(client, target, due)));
        }
        let mut segment = Segment::new();
        for request in in_flight {
            segment.record(request.await?);
        }
        segment.elapsed = started.elapsed();
        pacer
            .join()
            .map_err(|_| anyhow::anyhow!("the pacer thread panicked"))?;
        Ok(segment)
    }

    /// The mock keeps every request it receives; clearing it keeps its memory, and the cost of
    /// growing that list, the same for every segment.
    async fn reset_mock(&self) -> anyhow::Result<()> {
        let response = self.client.post(self.reset).send().await?;
        if !response.status().is_success() {
            bail!("mock reset answered {}", response.status());
        }
        Ok(())
    }
}

/// Sends the due time of each of `count` requests at that time. A thread of its own sleeping
/// with `std::thread::sleep` keeps to the schedule within tens of µs; tokio's timer has a 1 ms
/// granularity, which would bunch requests up and add up to 1 ms to every latency.
fn pace(rate: u32, count: u64, due_tx: &mpsc::UnboundedSender<Instant>) {
    let t0 = Instant::now();
    for i in 0..count {
        let due = t0 + Duration::from_nanos(i * 1_000_000_000 / u64::from(rate));
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        if due_tx.send(due).is_err() {
            return;
        }
    }
}

/// How one request ended.
enum Outcome {
    Ok {
        latency: Duration,
        start_lag: Duration,
    },
    Status {
        status: u16,
        latency: Duration,
    },
    Failed(String),
}

/// One request, timed from its due time to the last byte of the answer.
async fn one_request(client: reqwest::Client, target: Target, due: Instant) -> Outcome {
    let start_lag = due.elapsed();
    let mut request = client
        .post(target.url)
        .header(CONTENT_TYPE, "application/json")
        .body(target.body);
    if let Some(key) = &target.key {
        request = request.bearer_auth(key);
    }
    let sent = request.send().await;
    let response = match sent {
        Ok(response) => response,
        Err(err) => return Outcome::Failed(err.to_string()),
    };
    let status = response.status().as_u16();
    let body = match response.bytes().await {
        Ok(body) => body,
        Err(err) => return Outcome::Failed(err.to_string()),
    };
    let latency = due.elapsed();
    if status != 200 {
        return Outcome::Status { status, latency };
    }
    if target.stream && !ends_with_done(&body) {
        return Outcome::Failed("stream ended without [DONE]".into());
    }
    Outcome::Ok { latency, start_lag }
}

/// A whole SSE answer ends with `data: [DONE]`; anything shorter was cut off.
fn ends_with_done(body: &[u8]) -> bool {
    let tail = &body[body.len().saturating_sub(32)..];
    tail.windows(6).any(|w| w == b"[DONE]")
}

/// Latencies and failures of one or more segments on one path.
struct Segment {
    latency: Histogram<u64>,
    refused_latency: Histogram<u64>,
    start_lag: Histogram<u64>,
    requests: u64,
    errors: u64,
    non_200: u64,
    first_error: Option<String>,
    elapsed: Duration,
}

impl Segment {
    fn new() -> Segment {
        let histogram =
            || Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("constant histogram bounds");
        Segment {
            latency: histogram(),
            refused_latency: histogram(),
            start_lag: histogram(),
            requests: 0,
            errors: 0,
            non_200: 0,
            first_error: None,
            elapsed: Duration::ZERO,
        }
    }

    fn record(&mut self, outcome: Outcome) {
        self.requests += 1;
        match outcome {
            Outcome::Ok { latency, start_lag } => {
                self.latency.saturating_record(micros(latency));
                self.start_lag.saturating_record(micros(start_lag));
            }
            Outcome::Status { status, latency } => {
                self.non_200 += 1;
                self.refused_latency.saturating_record(micros(latency));
                self.first_error
                    .get_or_insert_with(|| format!("HTTP {status}"));
            }
            Outcome::Failed(message) => {
                self.errors += 1;
                self.first_error.get_or_insert(message);
            }
        }
    }

    fn add(&mut self, other: Segment) {
        self.latency
            .add(&other.latency)
            .expect("histograms share their bounds");
        self.start_lag
            .add(&other.start_lag)
            .expect("histograms share their bounds");
        self.refused_latency
            .add(&other.refused_latency)
            .expect("histograms share their bounds");
        self.requests += other.requests;
        self.errors += other.errors;
        self.non_200 += other.non_200;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        self.elapsed += other.elapsed;
    }

    fn stats(&self) -> PathStats {
        let ok = self.latency.len();
        PathStats {
            requests: self.requests,
            errors: self.errors,
            non_200: self.non_200,
            non_200_p50_us: (self.non_200 > 0)
                .then(|| self.refused_latency.value_at_quantile(0.50)),
            first_error: self.first_error.clone(),
            achieved_rps: ok as f64 / self.elapsed.as_secs_f64().max(1e-9),
            p50_us: self.latency.value_at_quantile(0.50),
            p99_us: self.latency.value_at_quantile(0.99),
            max_us: self.latency.max(),
            start_lag_p50_us: self.start_lag.value_at_quantile(0.50),
            start_lag_p99_us: self.start_lag.value_at_quantile(0.99),
        }
    }
}

/// Whole microseconds, at least 1 (the histograms' lowest value).
fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

fn print_table(report: &Report) {
    let mode = if report.stream {
        "streaming"
    } else {
        "non-streaming"
    };
    let load = report
        .load_average
        .map_or_else(|| "unknown".into(), |l| format!("{l:.2}"));
    println!(
        "triage bench-overhead: {} cores shared by load generator, mock and router \
         (load average before: {load}); {mode}; {} s measured per path and rate after {} s \
         warm-up; children at RUST_LOG={}",
        report.cores, report.duration_secs, report.warmup_secs, report.child_log_level
    );
    println!(
        "{:>6} {:>9} {:>11} {:>11} {:>11} {:>11} {:>10} {:>10} {:>8} {:>8} {:>7} {:>10} {:>9}",
        "rate",
        "achieved",
        "direct p50",
        "direct p99",
        "router p50",
        "router p99",
        "added p50",
        "added p99",
        "lag p50",
        "lag p99",
        "errors",
        "router CPU",
        "mock CPU"
    );
    let cpu = |us: Option<f64>| us.map_or_else(|| "?".into(), |us| format!("{us:.0}µs"));
    for r in &report.rates {
        let errors = r.direct.errors + r.direct.non_200 + r.router.errors + r.router.non_200;
        println!(
            "{:>6} {:>9.1} {:>9}µs {:>9}µs {:>9}µs {:>9}µs {:>8}µs {:>8}µs {:>6}µs {:>6}µs {:>7} {:>10} {:>9}",
            r.rate,
            r.router.achieved_rps,
            r.direct.p50_us,
            r.direct.p99_us,
            r.router.p50_us,
            r.router.p99_us,
            r.added_p50_us,
            r.added_p99_us,
            r.router.start_lag_p50_us.max(r.direct.start_lag_p50_us),
            r.router.start_lag_p99_us.max(r.direct.start_lag_p99_us),
            errors,
            cpu(r.router_cpu_us_per_request),
            cpu(r.mock_cpu_us_per_request),
        );
    }
    print_errors(report);
    print_footprint(&report.footprint);
    println!(
        "achieved: answered requests/s via the router; lag: how late the load generator started \
         requests after their due time (it counts in every latency, on both paths alike); CPU: \
         user + system time per request of the router (its requests) and of the mock (both paths)"
    );
}

fn print_footprint(footprint: &Footprint) {
    let mib = |kib: Option<u64>| {
        kib.map_or_else(
            || "unknown".into(),
            |k| format!("{:.1} MiB", k as f64 / 1024.0),
        )
    };
    println!(
        "router: binary {:.1} MiB; start to first answered request {:.0} ms; RSS idle {}, \
         after load {}, peak {}",
        footprint.binary_bytes as f64 / (1024.0 * 1024.0),
        footprint.start_to_first_answer_ms,
        mib(footprint.rss_idle_kib),
        mib(footprint.rss_after_load_kib),
        mib(footprint.rss_peak_kib),
    );
}

/// A run with failures must say so, with the first message of each path.
fn print_errors(report: &Report) {
    for r in &report.rates {
        for (path, stats) in [("direct", &r.direct), ("router", &r.router)] {
            if stats.errors + stats.non_200 > 0 {
                let refused_p50 = stats
                    .non_200_p50_us
                    .map_or_else(String::new, |us| format!(", answered in {us} µs (p50)"));
                println!(
                    "WARNING: {} RPS {path}: {} of {} requests failed ({} errors, {} non-200{}); \
                     first: {}",
                    r.rate,
                    stats.errors + stats.non_200,
                    stats.requests,
                    stats.errors,
                    stats.non_200,
                    refused_p50,
                    stats.first_error.as_deref().unwrap_or("?")
                );
            }
        }
    }
}

/// The mock and the router as child processes, killed (and their files removed) on drop, so an
/// error half-way leaves nothing running.
struct Children {
    mock: SocketAddr,
    router: SocketAddr,
    processes: Vec<(&'static str, Child)>,
    dir: PathBuf,
}

impl Children {
    fn start(max_concurrent: Option<usize>, trace: bool) -> anyhow::Result<Children> {
        let dir = std::env::temp_dir().join(format!("triage-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        let (mock, router) = free_ports()?;
        let mut children = Children {
            mock,
            router,
            processes: Vec::new(),
            dir,
        };
        let config = children.dir.join("triage.toml");
        // The outcome log is on, as in production, in the scratch directory.
        let mut extra = format!("\n[log]\npath = {:?}\n", children.dir.join("triage.db"));
        if let Some(limit) = max_concurrent {
            extra += &format!("[limits]\nmax_concurrent_requests = {limit}\n");
        }
        if trace {
            extra += &format!("[telemetry]\notlp_endpoint = \"http://{mock}\"\n");
        }
        std::fs::write(&config, router_config(mock, router) + &extra)?;
        children.spawn("mock", &["mock-upstream", "--listen", &mock.to_string()])?;
        Ok(children)
    }

    /// Starts the router once the mock answers, and times it from spawn to its first answered
    /// chat request (polled every few milliseconds).
    async fn start_router(
        &mut self,
        client: &reqwest::Client,
        target: &Target,
    ) -> anyhow::Result<Duration> {
        let config = self.dir.join("triage.toml");
        let spawned = Instant::now();
        self.spawn("router", &["serve", "--config", &config.to_string_lossy()])?;
        let deadline = spawned + READY_TIMEOUT;
        loop {
            if let Outcome::Ok { .. } =
                one_request(client.clone(), target.clone(), Instant::now()).await
            {
                return Ok(spawned.elapsed());
            }
            self.check_alive("router")?;
            if Instant::now() > deadline {
                bail!("the router did not get ready; {}", self.log_tail("router"));
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// A virtual key in the router's log, made before the router starts (it then loads it),
    /// with a budget and rate no benchmark reaches.
    fn create_key(&self) -> anyhow::Result<String> {
        let mut store = triage_gateway::outcomes::store::Store::open(&self.dir.join("triage.db"))?;
        let new = triage_gateway::keys::NewKey {
            name: "bench".into(),
            budget_usd: Some(1e9),
            budget_period: None,
            rpm: Some(u32::MAX),
            tpm: Some(u32::MAX),
            models: Some(vec!["mock/*".into()]),
            expires_at: None,
            metadata: None,
        };
        let (row, secret) = new.into_row(triage_gateway::outcomes::now_ms())?;
        store.insert_key(&row)?;
        Ok(secret)
    }

    /// A child's process id (0 when it is not running).
    fn pid(&self, name: &str) -> u32 {
        self.processes
            .iter()
            .find(|(n, _)| *n == name)
            .map_or(0, |(_, child)| child.id())
    }

    /// A memory figure of the router from `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
    fn router_memory(&self, field: &str) -> Option<u64> {
        let (_, child) = self.processes.iter().find(|(n, _)| *n == "router")?;
        let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        line.split_whitespace().nth(1)?.parse().ok()
    }

    /// Starts this binary with `args`, its stderr in `<dir>/<name>.log`.
    fn spawn(&mut self, name: &'static str, args: &[&str]) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the triage binary")?;
        let log = File::create(self.log_path(name))?;
        let child = Command::new(exe)
            .args(args)
            .env("RUST_LOG", CHILD_LOG)
            // Router keys from the caller's environment would turn authentication on.
            .env_remove("TRIAGE_KEYS")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start the {name}"))?;
        self.processes.push((name, child));
        Ok(())
    }

    fn log_path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.log"))
    }

    /// Polls the mock's `/v1/models` until it answers 200.
    async fn wait_mock(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let url = format!("http://{}/v1/models", self.mock);
        let deadline = Instant::now() + READY_TIMEOUT;
        while !is_ok(client, &url).await {
            self.check_alive("mock")?;
            if Instant::now() > deadline {
                bail!("the mock did not get ready; {}", self.log_tail("mock"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Fails at once, with the child's log, when it has already exited (a bad config, a port
    /// taken), rather than waiting out the readiness deadline.
    fn check_alive(&mut self, name: &str) -> anyhow::Result<()> {
        let Some((_, child)) = self.processes.iter_mut().find(|(n, _)| *n == name) else {
            return Ok(());
        };
        if let Some(status) = child.try_wait()? {
            bail!("the {name} exited ({status}); {}", self.log_tail(name));
        }
        Ok(())
    }

    /// The last lines a child wrote to stderr, for error messages.
    fn log_tail(&self, name: &str) -> String {
        let text = std::fs::read_to_string(self.log_path(name)).unwrap_or_default();
        let start = text.len().saturating_sub(2000);
        let start = (start..text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(start);
        format!("its log:\n{}", &text[start..])
    }
}

impl Drop for Children {
    fn drop(&mut self) {
        for (_, child) in &mut self.processes {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn is_ok(client: &reqwest::Client, url: &str) -> bool {
    let response = client.get(url).timeout(Duration::from_secs(1)).send().await;
    response.is_ok_and(|r| r.status().is_success())
}

/// Two distinct loopback ports nobody listens on right now (both are held until both are
/// chosen). The children bind them a moment later; another process taking one in between is
/// possible but makes the start fail loudly, not wrongly.
fn free_ports() -> std::io::Result<(SocketAddr, SocketAddr)> {
    let first = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    let second = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
    Ok((first.local_addr()?, second.local_addr()?))
}

/// A config with one keyless provider `mock` and one free model `mock/small`; no router keys.
fn router_config(mock: SocketAddr, listen: SocketAddr) -> String {
    format!(
        r#"listen = "{listen}"

[[providers]]
name = "mock"
kind = "openai"
base_url = "http://{mock}/v1"

[[models]]
id = "mock/small"
provider = "mock"
input_per_mtok = 0.0
output_per_mtok = 0.0
context = 8192
"#
    )
}
