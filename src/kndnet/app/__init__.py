"""`kndnet app`: a static web app in which the int8 student classifies a photo on the user's device.

build.py writes the app (web/ sources, the model with its class-map output, ONNX Runtime Web's files),
runtime.py fetches ONNX Runtime Web with npm into a cache, serve.py serves a folder on 127.0.0.1.
"""

from kndnet.app.build import AppBuild, build_app
from kndnet.app.serve import serve_folder

__all__ = ["AppBuild", "build_app", "serve_folder"]
