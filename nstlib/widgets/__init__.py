"""The course's interactive panels (ipywidgets), one module each:

- `TuningPanel` (`nstlib.widgets.tuning`, its controls in `tuning_controls`): notebook 6's
  tuning panel, a live preview of `stylize`;
- `ComparePanel` (`compare`): two tuning panels side by side;
- `LayerExplorer` (`explorer`, its images in `layer_views`): notebook 1's live layer explorer;
- what they share (`common`): the image chooser, status markup, PNG previews, the network cache.
"""

from nstlib.widgets.compare import ComparePanel
from nstlib.widgets.explorer import LayerExplorer
from nstlib.widgets.tuning import TuningPanel

__all__ = ["TuningPanel", "ComparePanel", "LayerExplorer"]
