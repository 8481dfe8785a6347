
# n2d: machine, swarm, image and host names, asked of n2d itself (`ls -q`, `swarm ls -q`,
# `image ls -q`) where a command takes one; everything else as generated above.
_n2d_names() {
    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD - 1]} i kind= words=()
    for ((i = 1; i < COMP_CWORD; i++)); do
        [[ ${COMP_WORDS[i]} == -* ]] || words+=("${COMP_WORDS[i]}")
    done
    case ${words[0]-} in
    inspect | ip | env | start | stop | restart | suspend | rm | delete | logs | console | exec | port) kind=machine ;;
    swarm) case ${words[1]-} in env | rm | suspend | scale | load | upgrade | add-host) kind=swarm ;; esac ;;
    image) case ${words[1]-} in inspect | rm | warm | export) kind=image ;; esac ;;
    certs) case ${words[1]-} in rotate) kind=machine ;; esac ;;
    fault) case ${words[1]-} in partition | delay | pause | kill-engine | fill-disk | clock | clear) kind=machine ;; esac ;;
    host) case ${words[1]-} in rm | delete) kind=host ;; esac ;;
    esac
    if [[ -n $kind && $cur != -* && $prev != -* ]]; then
        local names
        case $kind in
        machine) names=$("${COMP_WORDS[0]}" ls -q 2>/dev/null) ;;
        swarm) names=$("${COMP_WORDS[0]}" swarm ls -q 2>/dev/null) ;;
        image) names=$("${COMP_WORDS[0]}" image ls -q 2>/dev/null) ;;
        host) names=$("${COMP_WORDS[0]}" host ls -q 2>/dev/null) ;;
        esac
        mapfile -t COMPREPLY < <(compgen -W "$names" -- "$cur")
        return 0
    fi
    _n2d "$@"
}
complete -F _n2d_names -o bashdefault -o default n2d
