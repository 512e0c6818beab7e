defmodule Payloads do
  @moduledoc "The unifex native of this project (c_src/payloads), as a NIF."
  use Unifex.Loader
end
