
# n2d: machine, swarm, image and host names, asked of n2d itself where a command takes one;
# everything else by _n2d above.
_n2d_names() {
    local -a before names
    before=(${${words[2,CURRENT-1]}:#-*})
    local kind=
    case ${before[1]} in
        inspect|ip|env|start|stop|restart|suspend|rm|delete|logs|console|exec|port) kind=machine ;;
        swarm) case ${before[2]} in env|rm|suspend|scale|load|upgrade|add-host) kind=swarm ;; esac ;;
        image) case ${before[2]} in inspect|rm|warm|export) kind=image ;; esac ;;
        certs) case ${before[2]} in rotate) kind=machine ;; esac ;;
        fault) case ${before[2]} in partition|delay|pause|kill-engine|fill-disk|clock|clear) kind=machine ;; esac ;;
        host) case ${before[2]} in rm|delete) kind=host ;; esac ;;
    esac
    if [[ -n $kind && $PREFIX != -* && ${words[CURRENT-1]} != -* ]]; then
        case $kind in
            machine) names=(${(f)"$(${words[1]} ls -q 2>/dev/null)"}) ;;
            swarm) names=(${(f)"$(${words[1]} swarm ls -q 2>/dev/null)"}) ;;
            image) names=(${(f)"$(${words[1]} image ls -q 2>/dev/null)"}) ;;
            host) names=(${(f)"$(${words[1]} host ls -q 2>/dev/null)"}) ;;
        esac
        compadd -a names
        return
    fi
    _n2d "$@"
}
