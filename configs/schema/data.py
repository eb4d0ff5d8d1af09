"""data: where ingest reads images, how it stores and splits them, and how training
reads and resizes them."""

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from configs.schema.base import PathSetting, Section
from core import locations


class SplitConfig(Section):
    train: float = Field(0.8, gt=0, le=1, description="Fraction of unique images for training.")
    val: float = Field(0.1, ge=0, lt=1, description="Fraction for validation (early stopping).")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction held out for the final report.")

    @model_validator(mode="after")
    def _fractions_sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(
                f"train + val + test must sum to 1 (received {self.train} + {self.val} + "
                f"{self.test} = {total:g})"
            )
        return self


class StoreConfig(Section):
    max_side: int | None = Field(
        None, gt=0, description="Images with a longer side are downscaled to it; null = never."
    )
    format: Literal["png", "jpeg"] = Field(
        "png", description="Encoding of images ingest rewrites (png is lossless, jpeg smaller)."
    )
    jpeg_quality: int = Field(95, ge=50, le=100, description="Quality when format is jpeg.")


class CardConfig(Section):
    description: str = Field(
        "", description="What the images are and how they were collected, for the dataset card."
    )
    license: str | None = Field(
        None, description="The images' licence (e.g. CC-BY-4.0), for the dataset card."
    )
    citation: str | None = Field(
        None, description="How to cite the images' source, for the dataset card."
    )


class NearDuplicatesConfig(Section):
    mode: Literal["off", "flag", "move", "drop"] = Field(
        "flag",
        description="Images whose perceptual hashes (pHash) differ in at most max_distance bits "
        "form a group: flag = report the groups, splits unchanged; move = each group goes "
        "wholly into one split; drop = keep one image per group (the largest, or one given "
        "in val/test), quarantine the rest; off = do not hash.",
    )
    max_distance: int = Field(
        8,
        ge=0,
        le=16,
        description="Largest Hamming distance between two 64-bit pHashes that still counts as "
        "a copy: resized and re-encoded copies measure 0-6, 1-2% crops mostly under 10, "
        "unrelated photos rarely under 20.",
    )

    @field_validator("mode", mode="before")
    @classmethod
    def _yaml_off_is_off(cls, mode):
        # YAML 1.1 reads a bare `off` as false.
        return "off" if mode is False else mode


class DataConfig(Section):
    source: str = Field(
        "data/digits",
        description="Where ingest reads images: a class-folder tree (optionally under "
        "train/ val/ test/), a .csv or .jsonl manifest, s3://, gs://, http(s):// (image, "
        "manifest, .zip or .tar.gz), or tfds:<name>[:<split>].",
    )
    storage_options: dict[str, Any] = Field(
        default_factory=dict,
        description="fsspec options for remote sources and a bucket data.output_dir, e.g. "
        "{endpoint_url: http://127.0.0.1:9000}, or keyed by protocol: {s3: {...}, gs: {...}}.",
    )
    read_retries: int = Field(3, ge=0, description="Retries of a failed remote read.")
    retry_backoff_s: float = Field(0.5, ge=0, description="First retry delay; doubles each time.")
    read_timeout_s: float = Field(60.0, gt=0, description="Timeout of one remote read.")
    classes: list[str] | None = Field(
        None, description="Allowed class names; a label outside them is an error. null = any."
    )
    background: tuple[int, int, int] = Field(
        (255, 255, 255), description="RGB that transparent pixels are composited on."
    )
    store: StoreConfig = Field(default_factory=StoreConfig)
    card: CardConfig = Field(default_factory=CardConfig)
    near_duplicates: NearDuplicatesConfig = Field(default_factory=NearDuplicatesConfig)
    leakage: Literal["keep_eval", "drop", "error"] = Field(
        "keep_eval",
        description="Same bytes in two given splits: keep the val/test copy, drop all, or stop.",
    )
    output_dir: PathSetting = Field(
        "data/tfrecords",
        description="Ingest writes <output_dir>/<dataset_version>/ here: a local folder, s3:// or "
        "gs:// (reached like data.source; readers use a local cached copy, see docs/data.md).",
    )

    @field_validator("output_dir")
    @classmethod
    def _output_dir_is_a_folder_or_a_bucket(cls, output_dir: str) -> str:
        scheme = locations.scheme_of(output_dir)
        if scheme is not None and scheme not in locations.BUCKET_SCHEMES:
            schemes = ", ".join(f"{name}://" for name in locations.BUCKET_SCHEMES)
            raise ValueError(
                f"{scheme}:// cannot hold dataset versions (received {output_dir}); use a local "
                f"(or mounted) folder or a bucket: {schemes}"
            )
        return output_dir

    version: str = Field(
        "latest", description="Dataset version to train on; 'latest' is the last ingested."
    )
    image_size: tuple[int, int] = Field(
        (32, 32), description="Model input (height, width); images are resized to it."
    )
    resize: Literal["crop", "stretch"] = Field(
        "crop",
        description="How evaluation and serving (and training without random_resized_crop) fit "
        "an image to image_size: crop = scale the shorter side to image_size / crop_fraction "
        "keeping the aspect ratio, then take the centre (timm, Ultralytics); stretch = scale "
        "each side to image_size, distorting the aspect ratio.",
    )
    crop_fraction: float = Field(
        1.0,
        gt=0.05,
        le=1,
        description="crop: the centre fraction of the resized image kept (timm's crop_pct; "
        "0.875 is ImageNet practice with random_resized_crop training, 1.0 keeps the whole "
        "shorter side).",
    )
    channels: Literal[1, 3] = Field(3, description="1 = grayscale, 3 = RGB model input.")
    split: SplitConfig = Field(default_factory=SplitConfig)
    examples_per_shard: int = Field(1024, gt=0, description="TFRecord shard size.")
    max_pixels: int = Field(
        40_000_000, gt=0, description="Images larger than this are quarantined (bombs)."
    )
    batch_size: int = Field(64, gt=0, description="Global batch size.")
    shuffle_buffer: int = Field(2048, ge=0, description="Training shuffle buffer (examples).")
    beam_runner: str = Field("DirectRunner", description="Apache Beam runner for ingest.")
    beam_direct_mode: Literal["multi_processing", "in_memory", "multi_threading"] = Field(
        "in_memory",
        description="DirectRunner mode: in_memory runs in one process and decodes with a thread "
        "per core (the fastest and smallest on one machine: bench_ingest); multi_processing "
        "starts a worker process per core.",
    )
    beam_workers: int = Field(
        0,
        ge=0,
        description="DirectRunner worker processes, or in_memory's decode threads; 0: one per "
        "core.",
    )
    beam_options: list[str] = Field(
        default_factory=list,
        description="Extra Beam pipeline options, e.g. --direct_num_workers=2.",
    )

    @field_validator("image_size")
    @classmethod
    def _positive_size(cls, size):
        if min(size) <= 0:
            raise ValueError(f"both sides must be > 0 (received {list(size)})")
        return size

    @field_validator("background")
    @classmethod
    def _byte_values(cls, rgb):
        if not all(0 <= value <= 255 for value in rgb):
            raise ValueError(f"each of R, G, B must be in 0..255 (received {list(rgb)})")
        return rgb
