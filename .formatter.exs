[
  inputs: [
    "{mix,.formatter,bundlex}.exs",
    "{config,lib,test,bench,examples,mix}/**/*.{ex,exs}",
    "integration/unifex/{mix,bundlex,.formatter}.exs",
    "integration/unifex/{lib,test}/**/*.{ex,exs}"
  ]
]
