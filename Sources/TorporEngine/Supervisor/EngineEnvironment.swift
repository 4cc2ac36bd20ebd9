/// What an engine process inherits from Torpor's environment: what engines need to run — search paths, locale,
/// the Python, CUDA, NCCL, PyTorch, vLLM, Hugging Face and Torpor library settings — and nothing else: not the admin
/// token, not API keys, not cloud credentials (another user who can read `/proc/PID/environ` of an engine, or an
/// engine's own code, sees only these). A model's `environment` adds variables and `pass_environment` names more to
/// pass through.
public enum EngineEnvironment {
    /// Variables passed by name.
    static let names: Set<String> = [
        "PATH", "HOME", "USER", "LOGNAME", "SHELL", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TERM", "PWD",
        "PYTHONPATH", "PYTHONHOME", "PYTHONUNBUFFERED", "PYTHONDONTWRITEBYTECODE", "VIRTUAL_ENV", "CONDA_PREFIX",
        "LD_LIBRARY_PATH", "SSL_CERT_FILE", "SSL_CERT_DIR", "REQUESTS_CA_BUNDLE",
    ]
    /// Variables passed by prefix.
    static let prefixes = [
        "LC_", "XDG_", "CUDA_", "NCCL_", "NVIDIA_", "CUBLAS_", "CUDNN_", "VLLM_", "HF_", "HUGGINGFACE_",
        "TRANSFORMERS_", "TORCH", "PYTORCH_", "TRITON_", "TORPOR_", "OMP_", "KMP_", "MKL_", "OPENBLAS_", "RAY_",
    ]
    /// Never passed, whatever the rules above say: the gateway's own secrets.
    static let withheld: Set<String> = ["TORPOR_ADMIN_TOKEN"]

    /// The variables of `parent` an engine gets: those the rules above allow, and those `passing` names.
    public static func inherited(from parent: [String: String], passing: [String] = []) -> [String: String] {
        let named = names.union(passing)
        return parent.filter { name, _ in
            !withheld.contains(name) && (named.contains(name) || prefixes.contains { name.hasPrefix($0) })
        }
    }
}
