//! `blkkin up`: the whole node stack in one process — relay, consumer,
//! collector and the embedded store with its Zipkin API — each on threads
//! of its own, stopped in pipeline order on Ctrl-C.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::{anyhow, Context};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Options shared by `blkkin up` and `blkkin demo`. The collector's
/// `--store` and `--state-dir` get help saying what `up` does with them.
#[derive(Debug, Clone, clap::Args)]
#[command(
    mut_arg("store", |a| a.help(
        "Keep spans in the embedded store (SQLite file) and serve Zipkin's v2 query API \
         from it on --listen [default: DATA_DIR/spans.db; --no-store: none]"
    )),
    mut_arg("state_dir", |a| a.help(
        "Keep the collector's checkpoints here (relay positions and open spans; a restart \
         resumes there) [default: DATA_DIR/collector]"
    ))
)]
pub struct StackArgs {
    /// Ring directory to drain [default: $BLKIN_SHM_DIR or /dev/shm/blkin-<uid>].
    #[arg(long, value_name = "DIR")]
    pub ring_dir: Option<PathBuf>,
    /// Where the relay keeps its streams [default: $XDG_STATE_HOME/blkkin or
    /// ~/.local/state/blkkin].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Address of the relay (consumers and live readers such as `blkkin tail`).
    #[arg(long, default_value = "127.0.0.1:7420", value_name = "ADDR")]
    pub relay_listen: SocketAddr,
    /// Do not keep spans in the embedded store (then give another sink,
    /// e.g. --zipkin-url).
    #[arg(long)]
    pub no_store: bool,
    /// The collector's sinks and settings; --store defaults to
    /// DATA_DIR/spans.db and --state-dir (checkpoints) to DATA_DIR/collector.
    #[command(flatten)]
    pub collector: blkkin_collector::service::CollectorArgs,
}

impl StackArgs {
    /// The ring directory, resolved as the library resolves it.
    pub fn ring_dir(&self) -> PathBuf {
        crate::ring_dir(self.ring_dir.clone())
    }

    /// The state directory.
    pub fn data_dir(&self) -> anyhow::Result<PathBuf> {
        if let Some(d) = &self.data_dir {
            return Ok(d.clone());
        }
        let base = std::env::var_os("XDG_STATE_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or_else(|| {
                std::env::var_os("HOME")
                    .filter(|v| !v.is_empty())
                    .map(|h| PathBuf::from(h).join(".local/state"))
            })
            .ok_or_else(|| anyhow!("neither XDG_STATE_HOME nor HOME is set: pass --data-dir"))?;
        Ok(base.join("blkkin"))
    }
}

/// A running node stack.
pub struct Stack {
    collector: Option<blkkin_collector::service::Collector>,
    relay_addr: SocketAddr,
    relay_stop: Option<tokio::sync::oneshot::Sender<()>>,
    relay: Option<JoinHandle<anyhow::Result<()>>>,
    consumer_stop: Arc<AtomicBool>,
    consumer: Option<JoinHandle<anyhow::Result<blkkin_consumerd::Stats>>>,
}

impl Stack {
    /// Starts the relay, the consumer draining into it and the collector
    /// reading it.
    pub fn start(args: &StackArgs) -> anyhow::Result<Stack> {
        let data_dir = args.data_dir()?;
        let store_on = args.collector.store.is_some() || !args.no_store;
        if store_on {
            // Checked before anything starts, so a clash is one clear error.
            let listen = args.collector.listen;
            if let Err(e) = std::net::TcpListener::bind(listen) {
                anyhow::bail!(
                    "the embedded store's Zipkin API cannot listen on {listen}: {e}. Is a Zipkin \
                     server (or another blkkin) running there? Give --listen ADDR for another \
                     address, or --no-store when another sink (--cassandra, --zipkin-url, \
                     --archive) keeps the spans"
                );
            }
        }
        let relay_dir = data_dir.join("relay");
        std::fs::create_dir_all(&relay_dir)
            .with_context(|| format!("creating {}", relay_dir.display()))?;
        let cfg = blkkin_relayd::Config::new(args.relay_listen, &relay_dir);
        let (relay_addr, relay_stop, relay) = start_relay(cfg)?;

        let consumer_stop = Arc::new(AtomicBool::new(false));
        let ccfg = blkkin_consumerd::Config::new(args.ring_dir(), relay_addr.to_string());
        let stop = consumer_stop.clone();
        let consumer = std::thread::Builder::new()
            .name("consumer".into())
            .spawn(move || blkkin_consumerd::Consumer::new(ccfg).run(&stop, Duration::from_secs(5)))
            .context("starting the consumer thread")?;

        let mut cargs = args.collector.clone();
        if cargs.store.is_none() && !args.no_store {
            cargs.store = Some(data_dir.join("spans.db"));
        }
        if cargs.state_dir.is_none() {
            cargs.state_dir = Some(data_dir.join("collector"));
        }
        // The embedded relay is the one of this data directory whatever
        // its port: checkpoints name it so, and a restart on another
        // --relay-listen resumes where the last run stopped.
        let collector = blkkin_collector::service::Collector::start_with_ids(
            &[relay_addr.to_string()],
            &[EMBEDDED_RELAY.to_string()],
            &cargs,
            Arc::new(AtomicBool::new(false)),
        )
        .context("starting the collector")?;
        Ok(Stack {
            collector: Some(collector),
            relay_addr,
            relay_stop: Some(relay_stop),
            relay: Some(relay),
            consumer_stop,
            consumer: Some(consumer),
        })
    }

    /// Where the relay listens.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay_addr
    }

    /// Where the embedded store's Zipkin API listens (unless --no-store).
    pub fn query_addr(&self) -> Option<SocketAddr> {
        self.collector.as_ref().and_then(|c| c.query_addr())
    }

    /// The embedded store (unless --no-store).
    pub fn store(&self) -> Option<&blkkin_collector::store::Store> {
        self.collector.as_ref().and_then(|c| c.store())
    }

    /// Stops in pipeline order: the consumer drains what is in the rings and
    /// waits for the relay's acknowledgements; the collector gets a moment to
    /// read the last records, flushes its sinks and keeps the spans still
    /// open in its last checkpoint (emitted at the next start on the same
    /// data directory); then the relay shuts down.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.consumer_stop.store(true, Ordering::Relaxed);
        let consumed = join("consumer", self.consumer.take());
        if let Some(c) = self.collector.take() {
            std::thread::sleep(Duration::from_millis(500));
            match c.stop() {
                Some(s) if s.checkpoint_behind => eprintln!(
                    "blkkin up: the sinks did not confirm everything in time: the next start \
                     reads the relay again from the last checkpoint (nothing is lost)"
                ),
                Some(s) => eprintln!(
                    "blkkin up: kept {} open side(s) of spans (waiting for their end, another \
                     side or --linger) in the checkpoint: they are emitted at the next start \
                     on this data directory",
                    s.kept_open
                ),
                None => {}
            }
        }
        if let Some(tx) = self.relay_stop.take() {
            let _ = tx.send(());
        }
        let relayed = join("relay", self.relay.take());
        consumed?;
        relayed
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.consumer_stop.store(true, Ordering::Relaxed);
        if let Some(tx) = self.relay_stop.take() {
            let _ = tx.send(());
        }
        if let Some(c) = self.collector.take() {
            c.stop();
        }
    }
}

fn join<T>(what: &str, h: Option<JoinHandle<anyhow::Result<T>>>) -> anyhow::Result<()> {
    match h.map(JoinHandle::join) {
        None | Some(Ok(Ok(_))) => Ok(()),
        Some(Ok(Err(e))) => Err(e.context(format!("the {what} failed"))),
        Some(Err(_)) => Err(anyhow!("the {what} thread panicked")),
    }
}

type RelayHandle = (
    SocketAddr,
    tokio::sync::oneshot::Sender<()>,
    JoinHandle<anyhow::Result<()>>,
);

/// Runs the relay on a small runtime of its own; returns once it listens.
fn start_relay(cfg: blkkin_relayd::Config) -> anyhow::Result<RelayHandle> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("relay")
        .enable_all()
        .build()
        .context("starting the relay's runtime")?;
    let listen = cfg.listen;
    let server = rt
        .block_on(blkkin_relayd::Server::bind(cfg))
        .with_context(|| format!("starting the relay on {listen}"))?;
    let addr = server.local_addr();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let handle = std::thread::Builder::new()
        .name("relay".into())
        .spawn(move || {
            rt.block_on(server.run(async {
                let _ = rx.await;
            }))
        })
        .context("starting the relay thread")?;
    Ok((addr, tx, handle))
}

static STOP: AtomicBool = AtomicBool::new(false);

/// The name the collector's checkpoints give the embedded relay.
const EMBEDDED_RELAY: &str = "embedded relay";

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Makes SIGINT/SIGTERM request a clean stop (see [`stop_requested`]).
pub fn install_stop_handler() {
    // SAFETY: the handler only stores to an atomic (async-signal-safe).
    unsafe {
        libc::signal(libc::SIGTERM, on_signal as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, on_signal as *const () as libc::sighandler_t);
    }
}

/// True once Ctrl-C or SIGTERM arrived.
pub fn stop_requested() -> bool {
    STOP.load(Ordering::Relaxed)
}

/// Logs of the embedded daemons to stderr: warnings unless $BLKKIN_LOG says
/// otherwise (e.g. BLKKIN_LOG=info shows the collector's counters).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("BLKKIN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .finish()
        .with(blkkin_collector::cassandra::driver_warning_filter())
        .try_init();
}

/// Where to look, for a person.
pub fn banner(what: &str, args: &StackArgs, stack: &Stack) -> String {
    let mut s = format!(
        "{what}: draining {} · relay on {} (blkkin tail {})",
        args.ring_dir().display(),
        stack.relay_addr(),
        stack.relay_addr()
    );
    if let Some(q) = stack.query_addr() {
        s.push_str(&format!(
            " · Zipkin API on http://{q}/api/v2/traces (Grafana: a Zipkin data source at http://{q})"
        ));
    }
    s
}

/// `blkkin up`: runs the stack until Ctrl-C.
pub fn up(args: &StackArgs) -> anyhow::Result<std::process::ExitCode> {
    install_stop_handler();
    init_logs();
    let stack = Stack::start(args)?;
    eprintln!("{} · Ctrl-C stops", banner("blkkin up", args, &stack));
    while !stop_requested() {
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("blkkin up: stopping (draining the rings first)");
    stack.stop()?;
    Ok(std::process::ExitCode::SUCCESS)
}
