//! Builds the kernel programs (exporter-ebpf) with the nightly toolchain and
//! bpf-linker, and places the object in OUT_DIR for `include_bytes_aligned!`.
use anyhow::{anyhow, Context as _};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } =
        cargo_metadata::MetadataCommand::new().no_deps().exec().context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "podwatch-ebpf")
        .ok_or_else(|| anyhow!("podwatch-ebpf package not found"))?;
    let root_dir = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?
        .as_str()
        .to_owned();
    aya_build::build_ebpf(
        [aya_build::Package { name: "podwatch-ebpf", root_dir: &root_dir, ..Default::default() }],
        Toolchain::default(),
    )
}
