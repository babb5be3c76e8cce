"""napari plugin (npe2 manifest ``napari.yaml``; ``pip install rosette-bmz[napari]``).

* :mod:`._reader`  opens ``rosette-bmz predict`` outputs (``*_prob.tif``, ``*_rosettes.tif``,
  ``*_rosettes.csv``) and saved reviews (``*_review.csv``);
* :mod:`._sample`  the bundled synthetic sample (outlines + cells) as sample data;
* :mod:`._widget`  the "Rosette review" dock widget (detect, review keys, save, fine-tune, export);
* :mod:`.review`   the review state and the corrections folder, without napari or Qt.

Only this package imports napari or Qt; nothing else in rosette_bmz imports it.
"""
