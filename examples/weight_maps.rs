//! Turn a folder of segmentation masks into U-Net weight maps, in parallel.
//!
//! ```sh
//! cargo run --release --example weight_maps -- MASKS_DIR OUT_DIR \
//!     [--w0 10] [--sigma 5] [--class-weights uniform|balanced|BG,FG] \
//!     [--connectivity face|full] [--everywhere]
//! ```
//!
//! Every `*.png` in `MASKS_DIR` becomes `OUT_DIR/NAME.npy`, the weight map
//! as a float32 `H×W` array (`numpy.load` reads it), and `OUT_DIR/NAME.png`,
//! a heat-map preview of it (black: the smallest weight of that map, pale
//! yellow: the largest).
//!
//! * An 8-bit image (gray, or colour converted to luma) is a binary mask:
//!   nonzero is foreground, and its connected components (`--connectivity`,
//!   8-neighbour `full` by default) are the instances.
//! * A 16-bit gray image is an instance-label image, used as it is: 0 is
//!   background, every other value one instance.
//!
//! The map is `w(x) = w_c(x) + w0·exp(-(d1(x) + d2(x))² / (2σ²))`
//! (Ronneberger et al. 2015), computed by `segloss::distance::UNetWeights`
//! with exact Euclidean distances. Files are processed in parallel; a file
//! that cannot be read or written is reported and skipped. The exit status
//! is 0 when every file succeeded, 1 when any failed, and 2 on bad arguments.

#[path = "support/heat_map.rs"]
mod heat_map;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use heat_map::heat_map;
use image::DynamicImage;
use indicatif::{ProgressBar, ProgressStyle};
use ndarray::Array2;
use rayon::prelude::*;
use segloss::distance::{ClassWeights, Connectivity, UNetWeights};

const USAGE: &str = "\
usage: weight_maps MASKS_DIR OUT_DIR [options]

Writes OUT_DIR/NAME.npy (float32 H×W U-Net weight map) and OUT_DIR/NAME.png
(heat-map preview) for every NAME.png in MASKS_DIR. 8-bit images are binary
masks (nonzero = foreground, instances = connected components); 16-bit gray
images are instance labels (0 = background).

options:
  --w0 W                 amplitude of the border term (default 10)
  --sigma S              width of the border term in pixels (default 5)
  --class-weights C      uniform (default), balanced, or BG,FG (e.g. 1,3)
  --connectivity K       face (4-neighbour) or full (8-neighbour, default),
                         for labelling 8-bit masks
  --everywhere           border term inside instances too (default: background only)
  -h, --help             print this help";

/// What the command line asks for.
struct Options {
    masks: PathBuf,
    out: PathBuf,
    weights: UNetWeights,
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "-h" || a == "--help") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("error: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(message) => {
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

// ---------------------------------------------------------------------------
// Arguments

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut positional = Vec::new();
    let mut weights = UNetWeights::new();
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        if !arg.starts_with("--") {
            positional.push(PathBuf::from(arg));
            continue;
        }
        // Both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, value)) => (flag, Some(value.to_string())),
            None => (arg.as_str(), None),
        };
        if flag == "--everywhere" {
            if inline.is_some() {
                return Err("--everywhere takes no value".into());
            }
            weights = weights.border_everywhere(true);
            continue;
        }
        let mut value = || {
            inline
                .clone()
                .or_else(|| rest.next().cloned())
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        weights = match flag {
            "--w0" => weights.w0(parse_number(flag, &value()?)?),
            "--sigma" => weights.sigma(parse_number(flag, &value()?)?),
            "--class-weights" => weights.class_weights(parse_class_weights(&value()?)?),
            "--connectivity" => weights.connectivity(parse_connectivity(&value()?)?),
            _ => return Err(format!("unknown option {arg}")),
        };
    }
    let [masks, out]: [PathBuf; 2] = positional.try_into().map_err(|p: Vec<PathBuf>| {
        format!("expected two paths, MASKS_DIR and OUT_DIR; got {}", p.len())
    })?;
    // Catch bad parameters (sigma <= 0, w0 < 0, ...) before any file is read.
    weights
        .for_labels::<f32, _>(&Array2::<u32>::zeros((1, 1)))
        .map_err(|e| e.to_string())?;
    if !masks.is_dir() {
        return Err(format!("MASKS_DIR {} is not a directory", masks.display()));
    }
    if same_dir(&masks, &out) {
        return Err(
            "OUT_DIR must differ from MASKS_DIR (the previews would replace the masks)".into(),
        );
    }
    Ok(Options {
        masks,
        out,
        weights,
    })
}

fn parse_number(flag: &str, text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| format!("{flag}: {text:?} is not a finite number"))
}

fn parse_class_weights(text: &str) -> Result<ClassWeights, String> {
    match text {
        "uniform" => Ok(ClassWeights::Uniform),
        "balanced" => Ok(ClassWeights::Balanced),
        _ => {
            let (bg, fg) = text.split_once(',').ok_or_else(|| {
                format!("--class-weights: {text:?} is not uniform, balanced or BG,FG")
            })?;
            Ok(ClassWeights::Fixed {
                background: parse_number("--class-weights", bg.trim())?,
                foreground: parse_number("--class-weights", fg.trim())?,
            })
        }
    }
}

fn parse_connectivity(text: &str) -> Result<Connectivity, String> {
    match text {
        "face" => Ok(Connectivity::Face),
        "full" => Ok(Connectivity::Full),
        _ => Err(format!("--connectivity: {text:?} is not face or full")),
    }
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

// ---------------------------------------------------------------------------
// The run

/// Processes every PNG; `Ok(false)` when some file failed.
fn run(options: &Options) -> Result<bool, String> {
    let start = Instant::now();
    let files = png_files(&options.masks)?;
    if files.is_empty() {
        return Err(format!("no .png files in {}", options.masks.display()));
    }
    std::fs::create_dir_all(&options.out)
        .map_err(|e| format!("cannot create {}: {e}", options.out.display()))?;

    let bar = ProgressBar::new(files.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} files  {elapsed} (eta {eta})")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    let failed: usize = files
        .par_iter()
        .map(|path| {
            let result = process(path, options);
            if let Err(message) = &result {
                // Printed above the bar, or plainly when there is no terminal.
                bar.suspend(|| eprintln!("error: {}: {message}", path.display()));
            }
            bar.inc(1);
            usize::from(result.is_err())
        })
        .sum();
    bar.finish_and_clear();
    println!(
        "{} files ok, {failed} failed, {:.2} s; weight maps in {}",
        files.len() - failed,
        start.elapsed().as_secs_f64(),
        options.out.display()
    );
    Ok(failed == 0)
}

/// The `*.png` files of `dir` (any case of the extension), sorted.
fn png_files(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let entries =
        std::fs::read_dir(dir).map_err(|e| format!("cannot read {}: {e}", dir.display()))?;
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| {
            path.is_file()
                && path
                    .extension()
                    .and_then(OsStr::to_str)
                    .is_some_and(|ext| ext.eq_ignore_ascii_case("png"))
        })
        .collect();
    files.sort();
    Ok(files)
}

/// One mask: read, weigh, write the `.npy` and the preview.
fn process(path: &Path, options: &Options) -> Result<(), String> {
    let image = image::open(path).map_err(|e| format!("cannot read the image: {e}"))?;
    let map = weight_map(&image, &options.weights)?;
    let stem = path
        .file_stem()
        .ok_or("the file has no name")?
        .to_string_lossy()
        .into_owned();
    let npy = options.out.join(format!("{stem}.npy"));
    ndarray_npy::write_npy(&npy, &map).map_err(|e| format!("{}: {e}", npy.display()))?;
    let preview = options.out.join(format!("{stem}.png"));
    heat_map(&map)
        .save(&preview)
        .map_err(|e| format!("{}: {e}", preview.display()))
}

/// The weight map of a decoded image: 16-bit gray (with or without alpha)
/// is an instance labelling, anything else a binary mask (nonzero luma is
/// foreground).
fn weight_map(image: &DynamicImage, weights: &UNetWeights) -> Result<Array2<f32>, String> {
    let (w, h) = (image.width() as usize, image.height() as usize);
    let result = match image {
        DynamicImage::ImageLuma16(_) | DynamicImage::ImageLumaA16(_) => {
            let gray = image.to_luma16();
            let labels = Array2::from_shape_fn((h, w), |(y, x)| {
                u32::from(gray.get_pixel(x as u32, y as u32)[0])
            });
            weights.for_labels::<f32, _>(&labels)
        }
        _ => {
            let luma = image.to_luma8();
            let mask =
                Array2::from_shape_fn((h, w), |(y, x)| luma.get_pixel(x as u32, y as u32)[0] != 0);
            weights.for_mask::<f32, _>(&mask)
        }
    };
    result.map_err(|e| e.to_string())
}

// ---------------------------------------------------------------------------
// Preview
