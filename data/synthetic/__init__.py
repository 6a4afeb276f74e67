"""The synthetic audio-visual data set: generator and TFDS builder.

Generator modules (see docs/synthetic.md for the physics and the sidecar format):
  config      GeneratorConfig, the validated frozen dataclass of every knob.
  classes     the class list (sounding first, then context) with appearance and timbre keys.
  geometry    pinhole camera, pan/zoom paths, closed-form piecewise constant-velocity trajectories.
  scene       random layout of a clip (objects, companions, motions, camera, background style).
  render      rasteriser: frames with exact depth, flow, segmentation and boxes.
  sound       procedural timbres and the background bed.
  propagation retarded-time propagation to the microphone (delay, Doppler, 1/r attenuation).
  soundscape  per-clip stems and mixture, with deterministic re-draws of silent sources.
  detections  simulated detector output (jitter, misses, false positives, scores, features).
  generator   generate_clip / write_clip / generate_split(s).
  generate    CLI: python -m asmp_data.synthetic.generate --out_dir=DIR.
  show        CLI: python -m asmp_data.synthetic.show --out=PNG.
  stats       CLI: python -m asmp_data.synthetic.stats --num_clips=N.
"""
