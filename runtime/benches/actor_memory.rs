//! What one live actor costs in memory: spawns N idle ractor actors (each has handled one
//! message and holds an idle timer, as a live aggregate does) and prints the RSS growth.
//!
//! `cargo bench -p playhouse-runtime --bench actor_memory [-- --actors N]`

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

struct Idle;

enum Ping {
    Ping,
}

impl ractor::Message for Ping {}

impl Actor for Idle {
    type Msg = Ping;
    type State = ();
    type Arguments = ();

    async fn pre_start(&self, myself: ActorRef<Ping>, _: ()) -> Result<(), ActorProcessingErr> {
        myself.send_after(Duration::from_secs(3600), || Ping::Ping);
        Ok(())
    }

    async fn handle(
        &self,
        _: ActorRef<Ping>,
        _: Ping,
        _: &mut (),
    ) -> Result<(), ActorProcessingErr> {
        Ok(())
    }
}

fn rss_kib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kib| kib.parse().ok())
        })
        .unwrap_or(f64::NAN)
}

fn main() {
    let mut actors = 1000;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        if arg == "--actors" {
            actors = args
                .next()
                .and_then(|n| n.parse().ok())
                .expect("--actors N");
        }
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let before = rss_kib();
        let mut live = Vec::with_capacity(actors);
        for _ in 0..actors {
            let (actor, _) = Actor::spawn(None, Idle, ()).await.unwrap();
            actor.send_message(Ping::Ping).unwrap();
            live.push(actor);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let grown = rss_kib() - before;
        println!(
            "{actors} idle ractor actors (cluster feature on): RSS +{:.1} MiB, {:.1} KiB per actor",
            grown / 1024.0,
            grown / actors as f64
        );
        for actor in live {
            actor.stop(None);
        }
    });
}
