//! The integration tests, in one binary (one link, not one per file): the real `playhouse`
//! binary end to end (HTTP, services, clusters of real processes with kill -9, SIGSTOP and
//! iptables cut-offs, TLS, the browser), and the simulation of a whole cluster in this process.

mod support;

mod accounts;
mod backup;
mod bank;
mod catalog;
mod cluster;
mod cluster_port;
mod cluster_sim;
mod config_files;
mod customers;
mod edge;
mod fixture;
mod full_disk;
mod grafana;
mod guestbook;
mod inventory;
mod kit;
mod membership;
mod notifications;
mod orders;
mod payments;
mod projections;
mod replicated_alone;
mod replicated_sim;
mod sagas_crash;
mod sim;
mod transfers;
mod ui;
mod worst_day;
