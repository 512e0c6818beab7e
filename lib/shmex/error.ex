defmodule Shmex.Error do
  @moduledoc """
  Raised by the `Shmex` helpers when the `Shmex.Native` call behind them
  returns `{:error, reason}`; `reason` is that reason.
  """

  defexception [:reason]

  @type t :: %__MODULE__{reason: Shmex.Native.reason()}

  @impl Exception
  def message(%__MODULE__{reason: {posix, syscall}}) do
    "shared memory #{syscall} failed: #{:file.format_error(posix)} (#{inspect(posix)})"
  end

  def message(%__MODULE__{reason: reason}) do
    "shared memory operation failed: #{inspect(reason)}"
  end
end
