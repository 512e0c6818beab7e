defmodule Payloads.BundlexProject do
  use Bundlex.Project

  def project do
    [
      natives: [
        payloads: [
          sources: ["payloads.c"],
          interface: [:nif, :cnode],
          preprocessor: Unifex
        ]
      ]
    ]
  end
end
