//! The demo's registry (`ci/demo.sh`): starts Debian's docker-registry on a free loopback port
//! with the busybox image the tests use (`keel_testkit::registry`), prints the port on stdout
//! and serves until stdin closes, then stops and removes its storage.

fn main() {
    let registry = keel_testkit::registry::Registry::start();
    let digest = registry.push_busybox();
    eprintln!(
        "local-registry: library/busybox:latest ({digest}) on 127.0.0.1:{}",
        registry.port
    );
    println!("{}", registry.port);
    let mut sink = Vec::new();
    let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut sink);
}
