//! The harness's backend on hosts without Windows: the driver's device engine
//! in-process, over the model of ksecdd + Schannel, with a generated server
//! certificate in the model's LocalMachine\My store.

use crate::backend::Driver;
use crate::Failure;
use ksspi::{Irql, Passive};
use ksspi_driver::device::{Device, DeviceConfig, FileId, Request};
use ksspi_driver::ntstatus::NtStatus;
use ksspi_sim::certs::{TestPki, Thumbprint};
use ksspi_sim::{SimConfig, SimPlatform, SimProvider};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// A request completed through a channel.
pub struct ChannelRequest {
    capacity: usize,
    done: mpsc::Sender<(NtStatus, Vec<u8>)>,
}

impl Request for ChannelRequest {
    fn output_capacity(&self) -> usize {
        self.capacity
    }
    fn complete(self, status: NtStatus, reply: &[u8]) {
        let _ = self.done.send((status, reply.to_vec()));
    }
}

/// The device over the model.
pub struct Model {
    pub sim: SimProvider,
    pub device: Device<SimProvider, SimPlatform, ChannelRequest>,
    pub file: FileId,
    pub thumbprint: Thumbprint,
}

impl Model {
    /// A model device with a fresh test PKI: a CA in Root, a "localhost"
    /// server certificate in MY.
    pub fn new(config: SimConfig) -> Model {
        let (store, thumbprint) = TestPki::new("ksspictl model CA").store(&["localhost"]);
        let sim = SimProvider::new(config, Arc::new(store));
        let device = Device::new(sim.clone(), SimPlatform::new(&sim), DeviceConfig::default());
        let file = device.open_file();
        Model {
            sim,
            device,
            file,
            thumbprint,
        }
    }

    /// Send an IOCTL and start waiting for its completion.
    pub fn send(
        &self,
        code: u32,
        input: &[u8],
        capacity: usize,
    ) -> mpsc::Receiver<(NtStatus, Vec<u8>)> {
        let (tx, rx) = mpsc::channel();
        let at = Passive::check(Irql::PASSIVE).expect("the harness thread runs at PASSIVE");
        self.device.ioctl(
            self.file,
            code,
            input,
            ChannelRequest { capacity, done: tx },
            &at,
        );
        rx
    }

    /// Close everything, wait for it to go, and count what the model's
    /// verifier still holds.
    fn unload(self) -> u64 {
        self.device.cleanup(self.file);
        self.device.unload();
        for _ in 0..2000 {
            if self.device.sessions_alive() == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.sim.wait_idle();
        drop(self.device);
        match self.sim.unload() {
            Ok(()) => 0,
            Err(report) => {
                eprintln!("{report}");
                report.0.len() as u64
            }
        }
    }
}

impl Driver for Model {
    fn backend(&self) -> &'static str {
        "model"
    }

    fn call(&self, code: u32, input: &[u8], capacity: usize) -> Result<(i32, Vec<u8>), Failure> {
        self.send(code, input, capacity)
            .recv_timeout(Duration::from_secs(600))
            .map_err(|_| Failure("the driver did not complete the request within 600 s".into()))
    }

    fn finish(self: Box<Self>) -> u64 {
        self.unload()
    }
}
