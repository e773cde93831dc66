"""`aevb explore RUN`: a local web page to move through a trained model's latent space.

    pip install -e ".[explore]"       # Starlette + uvicorn (optional extra)
    aevb explore runs/digits          # serves http://127.0.0.1:8000 and opens a browser

Parts, each in its own file (data flows down this list):
- `adapter`    the only module that touches aevb's internals (run directory, dataset, prior);
- `latent_map` the 2-D map of the latent space (the latent plane itself, PCA or t-SNE);
- `explorer`   what the page asks of the model (decode, encode, score, sample), in torch;
- `images`     PNG in and out (uploaded or drawn images, decoded images);
- `validation` checks of every request's JSON (4xx with a message on bad input);
- `server`     the Starlette app and `serve` (uvicorn); `static/` the page (HTML/JS/CSS).

Importing this package imports neither Starlette nor torch.
"""
