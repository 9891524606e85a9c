//! Lays out the release binary's code so that what an idle agent runs sits together.
//!
//! Most of an idle agent's resident memory is its own code pages, and the kernel maps code
//! 64 KiB at a time around each page touched (`fault_around_bytes`). Left where the compiler
//! puts them, the few thousand functions an agent runs at start and at idle (sampling,
//! recording, answering a scrape) are spread over nearly every 64 KiB of the 5 MB of code, so
//! nearly all of it is mapped. `build/text-order.txt` lists those functions (written by
//! `scripts/text-order.sh` from a profile of the release agent); lld places them first. A
//! name that no longer exists (the code changed) is skipped silently: the layout degrades
//! gracefully until the list is written again.
//!
//! Only for release builds on x86_64 Linux with glibc, where rustc links with its own lld
//! (the default since Rust 1.90), and only while the linker is that default: a build that
//! chooses its own (`-C linker-features=-lld`, `-C linker=…`, `-fuse-ld=…`, a configured
//! `linker`) is linked as the compiler lays it out, since GNU ld refuses the option.

fn main() {
    const ORDER: &str = "build/text-order.txt";
    println!("cargo::rerun-if-changed={ORDER}");
    println!("cargo::rerun-if-changed=build.rs");
    let var = |name: &str| std::env::var(name).unwrap_or_default();
    println!("cargo::rerun-if-env-changed=RUSTC_LINKER");
    let flags = var("CARGO_ENCODED_RUSTFLAGS");
    let own_linker = ["linker", "fuse-ld", "link-self-contained"]
        .iter()
        .any(|setting| flags.contains(setting))
        || !var("RUSTC_LINKER").is_empty();
    if var("PROFILE") == "release" && var("TARGET") == "x86_64-unknown-linux-gnu" && !own_linker {
        let order = std::path::Path::new(&var("CARGO_MANIFEST_DIR")).join(ORDER);
        println!(
            "cargo::rustc-link-arg-bin=perfpilot=-Wl,--symbol-ordering-file={}",
            order.display()
        );
        println!("cargo::rustc-link-arg-bin=perfpilot=-Wl,--no-warn-symbol-ordering");
    }
}
