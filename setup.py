"""Distributed deep learning for science on Spark standalone clusters (TensorFlowOnSpark)."""
from setuptools import find_packages, setup

setup(
    name="spark-sci-dl",
    version="0.1.0",
    description="Three scientific deep-learning case studies (redshift, land cover, Dom-ST) "
                "trained on Spark standalone clusters with TensorFlowOnSpark",
    python_requires=">=3.11",
    packages=find_packages(include=["conf", "jobs", "rdd_io", "models", "distributed", "bench"]),
    package_data={"conf": ["*.yaml"]},
    install_requires=[
        "pyspark==4.3.0",
        "tensorflowonspark==2.2.5",
        "keras>=3.10,<4",
        "numpy>=1.26,<3",
        "h5py>=3.10,<4",
        "pyyaml>=6.0,<7",
        "psutil>=5.9,<8",
        "tqdm>=4.66,<5",
        "matplotlib>=3.8,<4",
        "tifffile>=2024.1",  # GeoTIFF: land-cover products, Dom-ST distance rasters
        "netCDF4>=1.7,<2",  # Dom-ST precipitation in the CRU TS layout
        # Storage at every URI on driver and executors; hdfs:// through a native client (no JVM, no libhdfs).
        "fsspec>=2024.6",
        "hdfs-native>=0.14.7,<0.15",
        # TFoS 2.2.5 imports pkg_resources at module level; setuptools 81 removes it.
        "setuptools>=65,<81",
        "packaging>=23",
        # The wire's per-frame MAC: GMAC (AES-GCM in OpenSSL), about ten times HMAC-SHA256 on model-sized frames.
        "cryptography>=42,<51",
        # Packs the executors' Python environment for spark.archives (`make env-archive`), as Spark's docs do.
        "venv-pack>=0.2,<0.3",
    ],
    extras_require={
        # TensorFlow comes in one of two builds, never both (they install the same module):
        # `pip install .[cpu]` (the default everywhere in this repository) or `pip install .[gpu]`.
        "cpu": ["tensorflow-cpu==2.21.0"],
        "gpu": ["tensorflow[and-cuda]==2.21.0"],
        # Land-cover products in raster formats other than GeoTIFF (ENVI and the like).
        "raster": ["rasterio>=1.3"],
        # JupyterLab for notebooks/inspect_outputs.ipynb (the Docker image installs the same).
        "notebook": ["jupyterlab>=4,<5"],
        # Viewing the per-role event files under <output>/tensorboard (writing them needs only TensorFlow).
        "tensorboard": ["tensorboard>=2.20,<3"],
        "test": ["pytest>=8,<10", "pytest-timeout>=2.3,<3", "pytest-xdist>=3.5,<4",
                 "hypothesis>=6.100,<7", "nbclient>=0.10,<1", "nbformat>=5.9,<6",
                 "ipykernel>=6.29,<8", "ruff>=0.15,<1"],
    },
    entry_points={"console_scripts": ["scidl-minicluster=distributed.minicluster:main"]},
)
