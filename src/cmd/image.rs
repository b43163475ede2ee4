//! `canopy import oci|docker-archive`, and how an image root's configuration is shown.

use super::{bytes, open, print_json, root_name};
use crate::cli::ImageArgs;
use anyhow::{Context, Result};
use canopy_protocol::{CommitBody, Escaped, IMAGE_EXTENSION, ImageConfig};
use canopy_server::Access;
use canopy_server::import::Outcome;
use canopy_server::oci::{self, Layer, Request};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

pub use canopy_server::oci::Format;

pub fn import(store: &Path, path: &Path, format: Format, args: ImageArgs) -> Result<ExitCode> {
    let root = root_name(&args.root)?;
    let store = open(store, Access::Write)?;
    let req = Request {
        root: root.clone(),
        path,
        format,
        reference: args.reference.as_deref(),
        platform: args.platform.as_deref(),
        limits: super::import::limits(args.limit.max_size),
        subject: args.message,
    };
    let json = args.json.json;
    let bar = ProgressBar::new_spinner()
        .with_style(ProgressStyle::with_template("{spinner} {wide_msg}").expect("static template"));
    if json || crate::output::quiet() {
        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar.set_message(format!("reading {}", path.display()));
    let mut on_layer = |n: usize, count: usize, layer: &Layer| {
        if !json {
            bar.suspend(|| println!("layer {n}/{count} {}", describe_layer(layer)));
        }
        bar.set_message(format!("layer {}/{count}", n + 1));
    };
    let result = oci::import(&store, &req, &mut on_layer);
    bar.finish_and_clear();
    // Refusals name the input and the layer or blob already.
    let done = result?;
    let image = &done.image;
    if json {
        let layers: Vec<_> = done
            .layers
            .iter()
            .map(|l| {
                let (imported, entries, stats) = match l.outcome {
                    Outcome::New { entries, stats } => (true, entries, stats),
                    Outcome::AlreadyImported => (false, 0, Default::default()),
                };
                json!({
                    "diff_id": l.diff_id, "digest": l.digest, "package": l.package.to_string(),
                    "imported": imported, "entries": entries,
                    "new_objects": stats.new_objects, "new_bytes": stats.new_bytes,
                })
            })
            .collect();
        print_json(&json!({
            "root": root.as_str(), "commit": done.commit.to_string(), "new_commit": done.new_commit,
            "image": image, "layers": layers,
            "new_objects": done.stats.new_objects, "new_bytes": done.stats.new_bytes,
        }))?;
    } else if done.new_commit {
        println!(
            "{root}: commit {} (image {}, {}, {} layers): {} new objects, {}",
            done.commit,
            image.manifest,
            image.platform,
            done.layers.len(),
            done.stats.new_objects,
            bytes(done.stats.new_bytes)
        );
    } else {
        println!(
            "{root} is already image {}: commit {}, nothing written",
            image.manifest, done.commit
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn describe_layer(layer: &Layer) -> String {
    match layer.outcome {
        Outcome::AlreadyImported => format!("{}: already imported", layer.diff_id),
        Outcome::New { entries, stats } => format!(
            "{}: {entries} entries, {} new objects, {}",
            layer.diff_id,
            stats.new_objects,
            bytes(stats.new_bytes)
        ),
    }
}

/// The image configuration a commit records, if it was made from an image.
pub fn of_commit(body: &CommitBody) -> Result<Option<ImageConfig>> {
    body.extensions
        .get(IMAGE_EXTENSION)
        .map(|v| ImageConfig::from_json(v))
        .transpose()
        .context("the commit's image configuration is not valid JSON")
}

/// Lines for `roots log`: the image and how it runs. What the image's config says is
/// shown escaped (as every name from outside is): a label or variable holding a
/// newline or a terminal escape cannot forge a line or drive the terminal.
pub fn lines(image: &ImageConfig) -> Vec<String> {
    let shown = |s: &str| Escaped(s.as_bytes()).to_string();
    // JSON escapes control characters itself.
    let list = |v: &Option<Vec<String>>| match v {
        Some(v) => serde_json::to_string(v).expect("strings serialise"),
        None => "-".to_string(),
    };
    let mut out = vec![
        format!(
            "image: {} ({})",
            shown(&image.manifest),
            shown(&image.platform)
        ),
        format!(
            "Entrypoint {}  Cmd {}",
            list(&image.entrypoint),
            list(&image.cmd)
        ),
    ];
    if !image.working_dir.is_empty() || !image.user.is_empty() {
        out.push(format!(
            "WorkingDir {}  User {}",
            if image.working_dir.is_empty() {
                "/".to_string()
            } else {
                shown(&image.working_dir)
            },
            if image.user.is_empty() {
                "root".to_string()
            } else {
                shown(&image.user)
            }
        ));
    }
    for e in &image.env {
        out.push(format!("Env {}", shown(e)));
    }
    for (k, v) in &image.labels {
        out.push(format!("Label {}={}", shown(k), shown(v)));
    }
    if !image.exposed_ports.is_empty() {
        let ports: Vec<String> = image.exposed_ports.iter().map(|p| shown(p)).collect();
        out.push(format!("ExposedPorts {}", ports.join(" ")));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_images_config_is_shown_escaped() {
        let image = ImageConfig {
            manifest: "sha256:ab".into(),
            platform: "linux/amd64".into(),
            env: vec!["A=\x1b[31mRED\nfake: line".into()],
            working_dir: "/srv\r".into(),
            user: "app".into(),
            labels: [("k\n".to_string(), "v\x07".to_string())].into(),
            exposed_ports: vec!["80/tcp\x1b".into()],
            ..ImageConfig::default()
        };
        let shown = lines(&image).join("\n");
        assert!(!shown.contains('\x1b') && !shown.contains('\x07') && !shown.contains('\r'));
        assert_eq!(shown.lines().count(), 6, "{shown}");
        assert!(shown.contains("Env A=\\x1b[31mRED\\nfake: line"), "{shown}");
        assert!(shown.contains("Label k\\n=v\\x07"), "{shown}");
    }
}
