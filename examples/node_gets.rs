//! Benchmark driver (not a test): gets through the C ABI on a client bound to an embedded
//! member in this process, on one thread — serializable (local, on the caller's thread)
//! and linearizable (one read-index round each). Prints one line per kind.
//! Usage: node_gets DATA_DIR SECONDS

use std::ffi::CString;
use std::time::{Duration, Instant};

use etcdc::ffi::get::*;
use etcdc::ffi::node::*;
use etcdc::ffi::put::*;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(dir), Some(secs)) = (args.get(1), args.get(2).and_then(|s| s.parse::<u64>().ok()))
    else {
        eprintln!("usage: node_gets DATA_DIR SECONDS");
        std::process::exit(2);
    };
    let opts = etcdc_node_options_new();
    let dir = CString::new(dir.as_str()).expect("a path without NUL");
    etcdc_node_options_set_data_dir(opts, dir.as_ptr());
    let mut node = std::ptr::null_mut();
    let mut client = std::ptr::null_mut();
    if etcdc_node_start(opts, &mut node) as i32 != 0
        || etcdc_node_client(node, std::ptr::null(), &mut client) as i32 != 0
    {
        eprintln!("node_gets: the node did not start");
        std::process::exit(1);
    }
    let (key, value) = (b"/bench/key", vec![b'v'; 256]);
    etcdc_put(
        client,
        key.as_ptr(),
        key.len(),
        value.as_ptr(),
        value.len(),
        std::ptr::null(),
        std::ptr::null_mut(),
    );
    let serializable = etcdc_get_options_new();
    etcdc_get_options_set_serializable(serializable, true);
    for (name, get_opts) in [
        ("serializable", serializable as *const _),
        ("linearizable", std::ptr::null()),
    ] {
        let until = Instant::now() + Duration::from_secs(secs);
        let start = Instant::now();
        let mut n = 0u64;
        while Instant::now() < until {
            for _ in 0..1000 {
                let mut r = std::ptr::null_mut();
                etcdc_get(client, key.as_ptr(), key.len(), get_opts, &mut r);
                etcdc_get_result_free(r);
            }
            n += 1000;
        }
        println!(
            "in-process {name} get, 1 thread: {:.0}/s",
            n as f64 / start.elapsed().as_secs_f64()
        );
    }
    etcdc_node_stop(node);
}
